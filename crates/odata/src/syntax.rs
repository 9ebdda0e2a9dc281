//! The syntax tree of query option values, before names are resolved: every node keeps the
//! column it starts at so that binding errors can point at it.

use crate::ir::{BinaryOp, Literal};

/// A name as written, e.g. one segment of `Datastream/Thing/name`.
#[derive(Clone, Debug)]
pub(crate) struct Name {
    pub(crate) text: String,
    pub(crate) column: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Expr {
    pub(crate) kind: ExprKind,
    /// 1-based character column of the first token.
    pub(crate) column: usize,
    /// The height of the tree below and including this node; the parser keeps it under
    /// `Limits::max_depth` so that every later recursive walk is bounded.
    pub(crate) height: usize,
    /// Written in parentheses: a parenthesised `and`/`or` chain is one operand and is not
    /// extended by the operators after it, so that the tree follows the text.
    pub(crate) parenthesized: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum ExprKind {
    /// Literals are fully parsed (and validated) by the parser.
    Literal(Literal),
    /// One or more `/`-separated segments; never empty.
    Member(Vec<Name>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary {
        op: BinaryOp,
        op_column: usize,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `a or b or c` (or the same with `and`): operands of one associative operator, kept flat
    /// so that a long list of alternatives does not make a deep tree.
    Chain {
        op: BinaryOp,
        operands: Vec<Expr>,
    },
    Call {
        name: Name,
        args: Vec<Expr>,
    },
}

/// The options of one level: the whole query string, or the parentheses of an `$expand` item.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    pub(crate) filter: Option<Expr>,
    pub(crate) select: Option<Vec<Name>>,
    pub(crate) expand: Option<Vec<ExpandItem>>,
    pub(crate) order_by: Option<Vec<OrderItem>>,
    pub(crate) top: Option<u64>,
    pub(crate) skip: Option<u64>,
    pub(crate) count: Option<bool>,
}

/// `Datastreams/Observations($top=1)`.
#[derive(Clone, Debug)]
pub(crate) struct ExpandItem {
    /// Navigation properties, at least one.
    pub(crate) path: Vec<Name>,
    pub(crate) options: Options,
}

/// `phenomenonTime desc`.
#[derive(Clone, Debug)]
pub(crate) struct OrderItem {
    pub(crate) expr: Expr,
    pub(crate) descending: bool,
}

//! A hand-written recursive-descent parser for option values, with precedence climbing for
//! `$filter` expressions. The grammar is in the crate documentation.
//!
//! Every recursive call passes a depth that is checked against [`Limits`], and every tree node
//! records its height, so neither hostile nesting (`((((…`) nor long operator chains
//! (`1 add 1 add …`) can overflow the stack here or in the binder, the SQL compiler or `Drop`.

use crate::Limits;
use crate::error::{ODataError, limit, syntax, unsupported};
use crate::ir::{BinaryOp, Literal};
use crate::lexer::{Token, TokenKind, tokenize};
use crate::syntax::{ExpandItem, Expr, ExprKind, Name, Options, OrderItem};
use model::{Geometry, Instant, Interval};

pub(crate) fn filter(src: &str, limits: &Limits) -> Result<Expr, ODataError> {
    let mut parser = Parser::new(src, limits)?;
    let expr = parser.expr(0)?;
    parser.finish("an operator")?;
    Ok(expr)
}

pub(crate) fn select(src: &str, limits: &Limits) -> Result<Vec<Name>, ODataError> {
    let mut parser = Parser::new(src, limits)?;
    let names = parser.select_list()?;
    parser.finish("`,`")?;
    Ok(names)
}

pub(crate) fn expand(src: &str, limits: &Limits) -> Result<Vec<ExpandItem>, ODataError> {
    let mut parser = Parser::new(src, limits)?;
    let items = parser.expand_list(1)?;
    parser.finish("`,` or `(`")?;
    Ok(items)
}

pub(crate) fn order_by(src: &str, limits: &Limits) -> Result<Vec<OrderItem>, ODataError> {
    let mut parser = Parser::new(src, limits)?;
    let items = parser.order_list()?;
    parser.finish("`asc`, `desc`, `,` or an operator")?;
    Ok(items)
}

/// The value of `$top` or `$skip`.
pub(crate) fn integer(src: &str, limits: &Limits) -> Result<u64, ODataError> {
    let mut parser = Parser::new(src, limits)?;
    let value = parser.integer()?;
    parser.finish("nothing")?;
    Ok(value)
}

/// The value of `$count`.
pub(crate) fn boolean(src: &str, limits: &Limits) -> Result<bool, ODataError> {
    let mut parser = Parser::new(src, limits)?;
    let value = parser.boolean()?;
    parser.finish("nothing")?;
    Ok(value)
}

/// The infix operator a word names, with its binding power.
fn infix(word: &str) -> Option<(BinaryOp, u8)> {
    let op = match word {
        "or" => BinaryOp::Or,
        "and" => BinaryOp::And,
        "eq" => BinaryOp::Eq,
        "ne" => BinaryOp::Ne,
        "gt" => BinaryOp::Gt,
        "ge" => BinaryOp::Ge,
        "lt" => BinaryOp::Lt,
        "le" => BinaryOp::Le,
        "add" => BinaryOp::Add,
        "sub" => BinaryOp::Sub,
        "mul" => BinaryOp::Mul,
        "div" => BinaryOp::Div,
        "mod" => BinaryOp::Mod,
        _ => return None,
    };
    Some((op, power(op)))
}

/// The binding power of an infix operator; a higher one binds tighter.
pub(crate) fn power(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => 1,
        BinaryOp::And => 2,
        BinaryOp::Eq | BinaryOp::Ne => 3,
        BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => 4,
        BinaryOp::Add | BinaryOp::Sub => 5,
        BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 6,
    }
}

/// `not` and unary `-` bind tighter than every infix operator.
pub(crate) const PREFIX_POWER: u8 = 7;

struct Parser<'a> {
    src: &'a str,
    /// Always ends with a `TokenKind::End` token.
    tokens: Vec<Token>,
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, limits: &'a Limits) -> Result<Parser<'a>, ODataError> {
        Ok(Parser { src, tokens: tokenize(src)?, pos: 0, limits })
    }

    fn peek(&self) -> Token {
        let end = Token { kind: TokenKind::End, start: self.src.len(), end: self.src.len(), column: 1 };
        self.tokens.get(self.pos).or(self.tokens.last()).copied().unwrap_or(end)
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        if token.kind != TokenKind::End {
            self.pos += 1;
        }
        token
    }

    fn text(&self, token: Token) -> &'a str {
        self.src.get(token.start..token.end).unwrap_or("")
    }

    /// How a token is named in messages.
    fn describe(&self, token: Token) -> String {
        match token.kind {
            TokenKind::End => "the end".to_owned(),
            _ => format!("`{}`", self.text(token)),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().kind == TokenKind::Punct(c)
    }

    fn is_word(&self, word: &str) -> bool {
        let token = self.peek();
        token.kind == TokenKind::Ident && self.text(token) == word
    }

    /// The token before the current one, for "expected … after `x`" messages.
    fn previous(&self) -> Option<Token> {
        self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)).copied()
    }

    fn expected(&self, what: &str) -> ODataError {
        let token = self.peek();
        let message = match self.previous() {
            Some(previous) => format!("expected {what} after {}", self.describe(previous)),
            None => format!("expected {what}, found {}", self.describe(token)),
        };
        syntax(token.column, message)
    }

    fn expect_punct(&mut self, c: char, what: &str) -> Result<Token, ODataError> {
        if self.is_punct(c) { Ok(self.bump()) } else { Err(self.expected(what)) }
    }

    fn finish(&self, what: &str) -> Result<(), ODataError> {
        if self.peek().kind == TokenKind::End { Ok(()) } else { Err(self.expected(what)) }
    }

    fn check_depth(&self, depth: usize) -> Result<(), ODataError> {
        if depth > self.limits.max_depth {
            let message = format!("the expression is nested more than {} levels deep", self.limits.max_depth);
            return Err(limit(self.peek().column, message));
        }
        Ok(())
    }

    /// A new tree node starting at `column`; `at` is where a limit error points.
    fn node(&self, kind: ExprKind, column: usize, height: usize, at: usize) -> Result<Expr, ODataError> {
        if height > self.limits.max_depth {
            let message = format!("the expression is nested more than {} levels deep", self.limits.max_depth);
            return Err(limit(at, message));
        }
        Ok(Expr { kind, column, height, parenthesized: false })
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ODataError> {
        self.expr_above(0, depth)
    }

    /// An expression whose infix operators all bind tighter than `min_power`.
    fn expr_above(&mut self, min_power: u8, depth: usize) -> Result<Expr, ODataError> {
        self.check_depth(depth)?;
        let mut left = self.prefix(depth)?;
        loop {
            let token = self.peek();
            if token.kind != TokenKind::Ident {
                break;
            }
            let Some((op, power)) = infix(self.text(token)) else {
                break;
            };
            if power <= min_power {
                break;
            }
            self.bump();
            let right = self.expr_above(power, depth + 1)?;
            left = self.combine(op, token.column, left, right)?;
        }
        Ok(left)
    }

    fn combine(&self, op: BinaryOp, op_column: usize, mut left: Expr, right: Expr) -> Result<Expr, ODataError> {
        let column = left.column;
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            // `a or b or c` is one chain, but `(a or b) or c` keeps its group as one operand.
            if let ExprKind::Chain { op: chained, operands } = &mut left.kind
                && *chained == op
                && !left.parenthesized
            {
                let height = left.height.max(right.height + 1);
                operands.push(right);
                return self.node(left.kind, column, height, op_column);
            }
            let height = left.height.max(right.height) + 1;
            return self.node(ExprKind::Chain { op, operands: vec![left, right] }, column, height, op_column);
        }
        let height = left.height.max(right.height) + 1;
        let kind = ExprKind::Binary { op, op_column, left: Box::new(left), right: Box::new(right) };
        self.node(kind, column, height, op_column)
    }

    fn prefix(&mut self, depth: usize) -> Result<Expr, ODataError> {
        let token = self.peek();
        let text = self.text(token);
        let column = token.column;
        let literal = |parser: &mut Parser<'_>, literal: Literal| {
            parser.bump();
            parser.node(ExprKind::Literal(literal), column, 1, column)
        };
        match token.kind {
            TokenKind::Punct('(') => {
                self.bump();
                let mut inner = self.expr(depth + 1)?;
                self.expect_punct(')', "`)` or an operator")?;
                inner.parenthesized = true;
                Ok(inner)
            }
            TokenKind::Punct('-') => {
                self.bump();
                let operand = self.expr_above(PREFIX_POWER, depth + 1)?;
                let height = operand.height + 1;
                self.node(ExprKind::Negate(Box::new(operand)), column, height, column)
            }
            TokenKind::Number => {
                let value =
                    number(text).ok_or_else(|| syntax(column, format!("the number `{text}` is out of range")))?;
                literal(self, value)
            }
            TokenKind::String => literal(self, Literal::String(unquote(text))),
            TokenKind::Date | TokenKind::Time => literal(self, Literal::String(text.to_owned())),
            TokenKind::DateTime => {
                let instant: Instant = text.parse().map_err(|e| syntax(column, format!("{e}")))?;
                literal(self, Literal::DateTime(instant))
            }
            TokenKind::Interval => {
                let interval: Interval = text.parse().map_err(|e| syntax(column, format!("{e}")))?;
                literal(self, Literal::Interval(interval))
            }
            TokenKind::Typed => {
                let value = typed_literal(text, column)?;
                literal(self, value)
            }
            TokenKind::Ident => match text {
                "null" => literal(self, Literal::Null),
                "true" => literal(self, Literal::Boolean(true)),
                "false" => literal(self, Literal::Boolean(false)),
                "not" => {
                    self.bump();
                    let operand = self.expr_above(PREFIX_POWER, depth + 1)?;
                    let height = operand.height + 1;
                    self.node(ExprKind::Not(Box::new(operand)), column, height, column)
                }
                _ if infix(text).is_some() => Err(self.expected("a value")),
                _ => {
                    self.bump();
                    if self.is_punct('(') {
                        self.call(Name { text: text.to_owned(), column }, depth)
                    } else {
                        self.member(Name { text: text.to_owned(), column })
                    }
                }
            },
            _ => Err(self.expected("a value")),
        }
    }

    /// The arguments of a function call, from its `(`.
    fn call(&mut self, name: Name, depth: usize) -> Result<Expr, ODataError> {
        self.bump();
        let mut args = Vec::new();
        if self.is_punct(')') {
            self.bump();
        } else {
            loop {
                args.push(self.expr(depth + 1)?);
                if self.is_punct(',') {
                    self.bump();
                } else {
                    self.expect_punct(')', "`,`, `)` or an operator")?;
                    break;
                }
            }
        }
        let column = name.column;
        let height = args.iter().map(|arg| arg.height).max().unwrap_or(0) + 1;
        self.node(ExprKind::Call { name, args }, column, height, column)
    }

    /// `Datastream/Thing/name`, `result/0`, from the first segment on.
    fn member(&mut self, first: Name) -> Result<Expr, ODataError> {
        let column = first.column;
        let mut segments = vec![first];
        while self.is_punct('/') {
            self.bump();
            let token = self.peek();
            // Operator keywords are not names, so `name/ eq 'x'` fails at `eq`, not at `'x'`.
            let is_name = match token.kind {
                TokenKind::Ident => infix(self.text(token)).is_none(),
                TokenKind::Number => true,
                _ => false,
            };
            if !is_name {
                return Err(self.expected("a property name"));
            }
            self.bump();
            let text = self.text(token);
            if matches!(text, "any" | "all") && self.is_punct('(') {
                let message = format!("the lambda operator `{text}` is not supported");
                return Err(unsupported(token.column, message));
            }
            segments.push(Name { text: text.to_owned(), column: token.column });
        }
        self.node(ExprKind::Member(segments), column, 1, column)
    }

    fn name(&mut self, what: &str) -> Result<Name, ODataError> {
        let token = self.peek();
        if token.kind != TokenKind::Ident || infix(self.text(token)).is_some() {
            return Err(self.expected(what));
        }
        self.bump();
        Ok(Name { text: self.text(token).to_owned(), column: token.column })
    }

    fn select_list(&mut self) -> Result<Vec<Name>, ODataError> {
        let mut names = vec![self.name("a property name")?];
        while self.is_punct(',') {
            self.bump();
            names.push(self.name("a property name")?);
        }
        Ok(names)
    }

    fn order_list(&mut self) -> Result<Vec<OrderItem>, ODataError> {
        let mut items = Vec::new();
        loop {
            let expr = self.expr(0)?;
            let descending = if self.is_word("desc") {
                self.bump();
                true
            } else {
                if self.is_word("asc") {
                    self.bump();
                }
                false
            };
            items.push(OrderItem { expr, descending });
            if !self.is_punct(',') {
                return Ok(items);
            }
            self.bump();
        }
    }

    /// Expand items whose first navigation is `depth` levels below the request's entity.
    fn expand_list(&mut self, depth: usize) -> Result<Vec<ExpandItem>, ODataError> {
        let mut items = vec![self.expand_item(depth)?];
        while self.is_punct(',') {
            self.bump();
            items.push(self.expand_item(depth)?);
        }
        Ok(items)
    }

    fn expand_item(&mut self, depth: usize) -> Result<ExpandItem, ODataError> {
        let mut path = Vec::new();
        loop {
            let level = depth + path.len();
            if level > self.limits.max_expand_depth {
                let message = format!("`$expand` is nested more than {} levels deep", self.limits.max_expand_depth);
                return Err(limit(self.peek().column, message));
            }
            path.push(self.name("a navigation property")?);
            if !self.is_punct('/') {
                break;
            }
            self.bump();
        }
        let mut options = Options::default();
        if self.is_punct('(') {
            self.bump();
            options = self.options(depth + path.len())?;
            self.expect_punct(')', "`;` or `)`")?;
        }
        Ok(ExpandItem { path, options })
    }

    /// `$filter=…;$top=…` inside the parentheses of an expand item whose nested items are
    /// `depth` levels deep.
    fn options(&mut self, depth: usize) -> Result<Options, ODataError> {
        let mut options = Options::default();
        loop {
            let token = self.peek();
            let name = self.text(token);
            if token.kind != TokenKind::Ident || !name.starts_with('$') {
                return Err(self.expected("a query option such as `$filter`"));
            }
            self.bump();
            self.expect_punct('=', "`=`")?;
            let twice = || syntax(token.column, format!("`{name}` is given more than once"));
            match name {
                "$filter" => {
                    let expr = self.expr(0)?;
                    if !self.is_punct(';') && !self.is_punct(')') {
                        return Err(self.expected("an operator"));
                    }
                    set_once(&mut options.filter, expr).ok_or_else(twice)?;
                }
                "$select" => set_once(&mut options.select, self.select_list()?).ok_or_else(twice)?,
                "$expand" => set_once(&mut options.expand, self.expand_list(depth)?).ok_or_else(twice)?,
                "$orderby" => set_once(&mut options.order_by, self.order_list()?).ok_or_else(twice)?,
                "$top" => set_once(&mut options.top, self.integer()?).ok_or_else(twice)?,
                "$skip" => set_once(&mut options.skip, self.integer()?).ok_or_else(twice)?,
                "$count" => set_once(&mut options.count, self.boolean()?).ok_or_else(twice)?,
                _ => {
                    let message = format!("the query option `{name}` is not supported inside `$expand`");
                    return Err(unsupported(token.column, message));
                }
            }
            if !self.is_punct(';') {
                return Ok(options);
            }
            self.bump();
        }
    }

    fn integer(&mut self) -> Result<u64, ODataError> {
        let token = self.peek();
        let text = self.text(token);
        let value = match token.kind {
            TokenKind::Number if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
            _ => None,
        };
        let value = value.ok_or_else(|| {
            syntax(token.column, format!("expected a non-negative integer, found {}", self.describe(token)))
        })?;
        self.bump();
        Ok(value)
    }

    fn boolean(&mut self) -> Result<bool, ODataError> {
        let token = self.peek();
        let value = match (token.kind, self.text(token)) {
            (TokenKind::Ident, "true") => true,
            (TokenKind::Ident, "false") => false,
            _ => {
                let message = format!("expected `true` or `false`, found {}", self.describe(token));
                return Err(syntax(token.column, message));
            }
        };
        self.bump();
        Ok(value)
    }
}

/// Stores `value` unless the slot is taken; `None` means it was.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// An integer that fits `i64` stays exact; everything else becomes a float.
fn number(text: &str) -> Option<Literal> {
    if !text.contains(['.', 'e', 'E'])
        && let Ok(integer) = text.parse::<i64>()
    {
        return Some(Literal::Integer(integer));
    }
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(Literal::Number(value))
}

/// The content of a quoted string token, with `''` turned back into `'`.
fn unquote(quoted: &str) -> String {
    let inner = quoted.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).unwrap_or(quoted);
    inner.replace("''", "'")
}

/// `duration'…'`, `geography'…'`, `geometry'…'`.
fn typed_literal(text: &str, column: usize) -> Result<Literal, ODataError> {
    let (prefix, quoted) = text.split_at(text.find('\'').unwrap_or(text.len()));
    let body = unquote(quoted);
    match prefix {
        "duration" => duration(&body, column).map(Literal::Duration),
        "geography" | "geometry" => {
            // OData allows an SRID in front of the WKT; every geometry here is in one CRS.
            let wkt = match body.split_once(';') {
                Some((srid, wkt)) if srid.to_ascii_uppercase().starts_with("SRID=") => wkt,
                _ => body.as_str(),
            };
            let geometry = Geometry::from_wkt(wkt).map_err(|e| syntax(column, format!("bad {prefix} literal: {e}")))?;
            Ok(Literal::Geometry(geometry))
        }
        _ => Err(syntax(column, format!("unknown literal type `{prefix}`; expected duration, geography or geometry"))),
    }
}

/// An ISO 8601 duration of days, hours, minutes and seconds (weeks count as seven days), in
/// microseconds. Years and months have no fixed length, so they cannot be compared or added
/// in SQL without a calendar; they are refused.
///
/// The arithmetic is exact, in units of 10^-18 µs (later fraction digits are dropped) rounded
/// once at the end, so a duration written back to the microsecond reads as the same value.
fn duration(text: &str, column: usize) -> Result<i64, ODataError> {
    const SECOND: i128 = 1_000_000;
    let bad = || syntax(column, format!("`{text}` is not an ISO 8601 duration such as P1DT2H30M"));
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let rest = rest.strip_prefix('P').ok_or_else(bad)?;
    let mut total: i128 = 0;
    let mut in_time = false;
    let mut any = false;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' => number.push(c),
            unit => {
                let scale = match (in_time, unit) {
                    (false, 'W') => 7 * 86_400 * SECOND,
                    (false, 'D') => 86_400 * SECOND,
                    (true, 'H') => 3_600 * SECOND,
                    (true, 'M') => 60 * SECOND,
                    (true, 'S') => SECOND,
                    (false, 'Y' | 'M') => {
                        let message = format!("`{text}` uses years or months, which have no fixed length; use days");
                        return Err(unsupported(column, message));
                    }
                    _ => return Err(bad()),
                };
                let value = decimal(&number).ok_or_else(bad)?;
                total = total.saturating_add(value.saturating_mul(scale));
                number.clear();
                any = true;
            }
        }
    }
    if !any || !number.is_empty() {
        return Err(bad());
    }
    let micros = total.saturating_add(DECIMAL_ONE / 2) / DECIMAL_ONE;
    let micros = i64::try_from(micros).map_err(|_| syntax(column, format!("the duration `{text}` is out of range")))?;
    Ok(if negative { -micros } else { micros })
}

/// The fixed point of [`decimal`]: 18 digits after the point.
const DECIMAL_ONE: i128 = 1_000_000_000_000_000_000;

/// `digits`, `digits.digits`, `.digits` or `digits.` (already known to hold only digits and
/// points) in units of 10^-18, saturating; `None` if it is not such a number.
fn decimal(text: &str) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let digit = |b: u8| i128::from(b.saturating_sub(b'0'));
    let whole = whole.bytes().fold(0_i128, |value, b| value.saturating_mul(10).saturating_add(digit(b)));
    let fraction = (0..18).fold(0_i128, |value, i| value * 10 + fraction.as_bytes().get(i).map_or(0, |&b| digit(b)));
    Some(whole.saturating_mul(DECIMAL_ONE).saturating_add(fraction))
}

//! The one error type of parsing and binding: what went wrong, in which option, at which column.

/// What kind of mistake a request made; the HTTP layer maps each to a stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text does not follow the grammar.
    Syntax,
    /// A property, navigation property or function that does not exist.
    UnknownName,
    /// An expression whose operand types do not fit.
    Type,
    /// Valid OData that this server does not implement.
    Unsupported,
    /// Too long or too deeply nested.
    Limit,
    /// A malformed entity key in a resource path, e.g. `Things('a')`.
    BadKey,
    /// A resource path that does not address anything.
    BadPath,
}

/// A parse or bind error, e.g. "$filter: unknown property `nmae` of Thing at column 1".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}{}", option_prefix(.option), column_suffix(.position))]
pub struct ODataError {
    pub kind: ErrorKind,
    /// What is wrong, without the option name and column (those are in the other fields).
    pub message: String,
    /// The query option the error is in, e.g. `$filter`; `None` for resource paths and for
    /// errors in the query string as a whole.
    pub option: Option<String>,
    /// The 1-based character column inside the option's decoded value (options nested in
    /// `$expand` count from the start of the whole `$expand` value), inside the decoded path,
    /// or inside the raw query string for percent-decoding errors.
    pub position: Option<usize>,
}

impl ODataError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> ODataError {
        ODataError { kind, message: message.into(), option: None, position: None }
    }

    pub(crate) fn at(mut self, position: usize) -> ODataError {
        self.position = Some(position);
        self
    }

    /// Names the option an error is in, unless an inner step already did.
    pub(crate) fn in_option(mut self, option: &str) -> ODataError {
        if self.option.is_none() {
            self.option = Some(option.to_owned());
        }
        self
    }
}

/// Shorthands for the error kinds, each with a position.
pub(crate) fn syntax(position: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::Syntax, message).at(position)
}

pub(crate) fn type_error(position: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::Type, message).at(position)
}

pub(crate) fn unknown(position: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::UnknownName, message).at(position)
}

pub(crate) fn unsupported(position: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::Unsupported, message).at(position)
}

pub(crate) fn limit(position: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::Limit, message).at(position)
}

fn option_prefix(option: &Option<String>) -> String {
    option.as_ref().map_or(String::new(), |option| format!("{option}: "))
}

fn column_suffix(position: &Option<usize>) -> String {
    position.map_or(String::new(), |position| format!(" at column {position}"))
}

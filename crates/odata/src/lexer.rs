//! Splits a decoded option value into tokens, each with its byte range and character column.
//!
//! Literals that OData writes without quotes (date-times, intervals, dates, times of day) are
//! recognised here by their shape, so that the parser never has to re-join `2024-01-01` from a
//! number and two negative numbers.

use crate::error::{ODataError, syntax};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A name or keyword: letters, digits, `_`, `.`, `@` and a leading `$`, e.g. `geo.distance`,
    /// `@iot.id`, `$filter`, `eq`.
    Ident,
    /// `12`, `-1.5e3`.
    Number,
    /// `'it''s'`, quotes included.
    String,
    /// `2024-01-01`.
    Date,
    /// `12:30:00`.
    Time,
    /// `2024-01-01T00:00:00Z`.
    DateTime,
    /// `2024-01-01T00:00:00Z/2024-02-01T00:00:00Z`.
    Interval,
    /// `duration'P1D'`, `geography'POINT(1 2)'`: a name immediately followed by a string.
    Typed,
    /// One of `( ) , / ; = - :`.
    Punct(char),
    /// After the last token; its column is one past the end of the text.
    End,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    /// Byte range in the source.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// 1-based character column of the first character.
    pub(crate) column: usize,
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ODataError> {
    let mut lexer = Lexer { src, chars: src.char_indices().collect(), pos: 0 };
    let mut tokens = Vec::new();
    loop {
        while lexer.peek(0).is_some_and(|c| c.is_ascii_whitespace()) {
            lexer.pos += 1;
        }
        let start = lexer.pos;
        let Some(c) = lexer.peek(0) else {
            let end = src.len();
            tokens.push(Token { kind: TokenKind::End, start: end, end, column: start + 1 });
            return Ok(tokens);
        };
        let kind = match c {
            '\'' => {
                lexer.string()?;
                TokenKind::String
            }
            '0'..='9' => lexer.number_or_time(),
            '-' if lexer.peek(1).is_some_and(|c| c.is_ascii_digit()) => {
                lexer.pos += 1;
                lexer.number()
            }
            c if is_ident_start(c) => {
                lexer.pos += 1;
                while lexer.peek(0).is_some_and(is_ident_char) {
                    lexer.pos += 1;
                }
                if lexer.peek(0) == Some('\'') {
                    lexer.string()?;
                    TokenKind::Typed
                } else {
                    TokenKind::Ident
                }
            }
            '(' | ')' | ',' | '/' | ';' | '=' | '-' | ':' => {
                lexer.pos += 1;
                TokenKind::Punct(c)
            }
            _ => return Err(syntax(start + 1, format!("unexpected character `{c}`"))),
        };
        tokens.push(Token { kind, start: lexer.byte(start), end: lexer.byte(lexer.pos), column: start + 1 });
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$' || c == '@'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.' || c == '@'
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    /// Index into `chars`, which is the 0-based character column.
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).map(|&(_, c)| c)
    }

    fn digit(&self, ahead: usize) -> bool {
        self.peek(ahead).is_some_and(|c| c.is_ascii_digit())
    }

    fn byte(&self, index: usize) -> usize {
        self.chars.get(index).map_or(self.src.len(), |&(byte, _)| byte)
    }

    /// A quoted string whose opening `'` is the current character; `''` inside stands for one
    /// quote.
    fn string(&mut self) -> Result<(), ODataError> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.peek(0) {
                None => return Err(syntax(open + 1, "unterminated string: a `'` is missing")),
                Some('\'') if self.peek(1) == Some('\'') => self.pos += 2,
                Some('\'') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn number_or_time(&mut self) -> TokenKind {
        let is_date = self.digit(0)
            && self.digit(1)
            && self.digit(2)
            && self.digit(3)
            && self.peek(4) == Some('-')
            && self.digit(5)
            && self.digit(6)
            && self.peek(7) == Some('-')
            && self.digit(8)
            && self.digit(9);
        if is_date {
            self.pos += 10;
            if self.peek(0) != Some('T') {
                return TokenKind::Date;
            }
            self.pos += 1;
            self.take_while(|c| c.is_ascii_digit() || matches!(c, ':' | '.' | '+' | '-' | 'Z' | 'z'));
            let interval =
                self.peek(0) == Some('/') && self.peek(1).is_some_and(|c| c.is_ascii_digit() || c == 'P' || c == '-');
            if !interval {
                return TokenKind::DateTime;
            }
            self.pos += 1;
            self.take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '+' | '-'));
            return TokenKind::Interval;
        }
        let is_time = self.digit(0) && self.digit(1) && self.peek(2) == Some(':') && self.digit(3) && self.digit(4);
        if is_time {
            self.pos += 5;
            if self.peek(0) == Some(':') && self.digit(1) && self.digit(2) {
                self.pos += 3;
                if self.peek(0) == Some('.') && self.digit(1) {
                    self.pos += 1;
                    self.take_while(|c| c.is_ascii_digit());
                }
            }
            return TokenKind::Time;
        }
        self.number()
    }

    /// Digits, an optional fraction and an optional exponent; a leading `-` is already taken.
    fn number(&mut self) -> TokenKind {
        self.take_while(|c| c.is_ascii_digit());
        if self.peek(0) == Some('.') && self.digit(1) {
            self.pos += 1;
            self.take_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek(1), Some('+' | '-')));
            if self.digit(1 + sign) {
                self.pos += 1 + sign;
                self.take_while(|c| c.is_ascii_digit());
            }
        }
        TokenKind::Number
    }

    fn take_while(&mut self, accept: impl Fn(char) -> bool) {
        while self.peek(0).is_some_and(&accept) {
            self.pos += 1;
        }
    }
}

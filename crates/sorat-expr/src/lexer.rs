//! Splits an expression into tokens, with GitHub's rules for where a token ends: a run of
//! characters up to the next boundary (punctuation, an operator character or white
//! space) is one number or identifier, so `1 @abc 2` fails on `@abc` and `foo.b@r` on
//! `b@r`.

use crate::number::{is_js_whitespace, parse_js_number};
use crate::parser::{ParseError, ParseErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    Dot,
    Bang,
    BangEqual,
    EqualEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    And,
    Or,
    Star,
    Number,
    String,
    Identifier,
    True,
    False,
    Null,
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    /// The characters as written.
    pub(crate) lexeme: String,
    /// The value of a number literal (or of `NaN`/`Infinity`).
    pub(crate) number: f64,
    /// The value of a string literal, quotes removed and `''` unescaped.
    pub(crate) string: String,
    /// 0-based index of the first character.
    pub(crate) start: usize,
}

impl Token {
    /// How the token is quoted in error messages: a string by its value, the end by
    /// `EOF`, anything else as written.
    pub(crate) fn display(&self) -> &str {
        match self.kind {
            TokenKind::Eof => "EOF",
            TokenKind::String => &self.string,
            _ => &self.lexeme,
        }
    }
}

pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer {
        source,
        chars: source.chars().collect(),
        start: 0,
        offset: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'s> {
    source: &'s str,
    chars: Vec<char>,
    start: usize,
    offset: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn run(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.chars.get(self.offset).copied() {
            self.start = self.offset;
            self.offset += 1;
            match c {
                '(' => self.add(TokenKind::LeftParen),
                ')' => self.add(TokenKind::RightParen),
                '[' => self.add(TokenKind::LeftBracket),
                ']' => self.add(TokenKind::RightBracket),
                ',' => self.add(TokenKind::Comma),
                '.' => {
                    // A dot after something that can be dereferenced is the dereference
                    // operator; anywhere else it starts a number such as `.5`.
                    if matches!(
                        self.previous(),
                        TokenKind::Identifier
                            | TokenKind::RightBracket
                            | TokenKind::RightParen
                            | TokenKind::Star
                    ) {
                        self.add(TokenKind::Dot);
                    } else {
                        self.number()?;
                    }
                }
                '-' | '+' => self.number()?,
                '!' => {
                    let kind = if self.matches('=') {
                        TokenKind::BangEqual
                    } else {
                        TokenKind::Bang
                    };
                    self.add(kind);
                }
                '=' => {
                    if self.matches('=') {
                        self.add(TokenKind::EqualEqual);
                    } else {
                        // A lone `=` is illegal: read to the next boundary for the message.
                        self.identifier()?;
                    }
                }
                '<' => {
                    let kind = if self.matches('=') {
                        TokenKind::LessEqual
                    } else {
                        TokenKind::Less
                    };
                    self.add(kind);
                }
                '>' => {
                    let kind = if self.matches('=') {
                        TokenKind::GreaterEqual
                    } else {
                        TokenKind::Greater
                    };
                    self.add(kind);
                }
                '&' => {
                    if self.matches('&') {
                        self.add(TokenKind::And);
                    } else {
                        self.identifier()?;
                    }
                }
                '|' => {
                    if self.matches('|') {
                        self.add(TokenKind::Or);
                    } else {
                        self.identifier()?;
                    }
                }
                '*' => self.add(TokenKind::Star),
                ' ' | '\r' | '\t' | '\n' => {}
                '\'' => self.string()?,
                c if c.is_ascii_digit() => self.number()?,
                _ => self.identifier()?,
            }
        }
        // Like the reference lexer, the end token sits where the last token (or skipped
        // white space) started.
        self.tokens.push(Token {
            kind: TokenKind::Eof,
            lexeme: String::new(),
            number: 0.0,
            string: String::new(),
            start: self.start,
        });
        Ok(())
    }

    fn previous(&self) -> TokenKind {
        self.tokens
            .last()
            .map_or(TokenKind::Eof, |token| token.kind)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.offset).copied()
    }

    fn matches(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.offset += 1;
            true
        } else {
            false
        }
    }

    fn lexeme(&self) -> String {
        self.chars[self.start..self.offset].iter().collect()
    }

    fn add(&mut self, kind: TokenKind) {
        self.push(kind, 0.0, String::new());
    }

    fn push(&mut self, kind: TokenKind, number: f64, string: String) {
        let lexeme = self.lexeme();
        self.tokens.push(Token {
            kind,
            lexeme,
            number,
            string,
            start: self.start,
        });
    }

    fn unexpected(&self, symbol: String) -> ParseError {
        ParseError {
            kind: ParseErrorKind::Lexing,
            message: format!("Unexpected symbol: '{symbol}'"),
            position: self.start + 1,
            expression: self.source.to_owned(),
        }
    }

    fn number(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek() {
            if is_boundary(c) && c != '.' {
                break;
            }
            self.offset += 1;
        }
        let lexeme = self.lexeme();
        let value = parse_js_number(&lexeme);
        if value.is_nan() {
            return Err(self.unexpected(lexeme));
        }
        self.push(TokenKind::Number, value, String::new());
        Ok(())
    }

    fn string(&mut self) -> Result<(), ParseError> {
        let mut value = String::new();
        loop {
            match self.peek() {
                None => {
                    let rest: String = self.chars[self.start..].iter().collect();
                    return Err(self.unexpected(rest));
                }
                Some('\'') => {
                    self.offset += 1;
                    if self.peek() == Some('\'') {
                        // `''` is an escaped quote.
                        self.offset += 1;
                        value.push('\'');
                    } else {
                        break;
                    }
                }
                Some(c) => {
                    self.offset += 1;
                    value.push(c);
                }
            }
        }
        self.push(TokenKind::String, 0.0, value);
        Ok(())
    }

    fn identifier(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek() {
            if is_boundary(c) {
                break;
            }
            self.offset += 1;
        }
        let lexeme = self.lexeme();
        let mut kind = TokenKind::Identifier;
        let mut number = 0.0;
        // After a dot every word is a property name, so `foo.true` and `foo.NaN` work.
        if self.previous() != TokenKind::Dot {
            match lexeme.as_str() {
                "true" => kind = TokenKind::True,
                "false" => kind = TokenKind::False,
                "null" => kind = TokenKind::Null,
                "NaN" => {
                    kind = TokenKind::Number;
                    number = f64::NAN;
                }
                "Infinity" => {
                    kind = TokenKind::Number;
                    number = f64::INFINITY;
                }
                _ => {}
            }
        }
        if !is_legal_identifier(&lexeme) {
            return Err(self.unexpected(lexeme));
        }
        self.push(kind, number, String::new());
        Ok(())
    }
}

fn is_boundary(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|'
    ) || is_js_whitespace(c)
}

/// `[A-Za-z_][A-Za-z0-9_-]*`, GitHub's rule for names and property names.
fn is_legal_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        _ => false,
    }
}

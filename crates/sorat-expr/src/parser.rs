//! Builds the syntax tree from tokens, checking names and function arities as GitHub does
//! at parse time, and limiting nesting to GitHub's maximum depth of 50.

use std::collections::HashSet;
use std::fmt;

use crate::lexer::{Token, TokenKind, tokenize};
use crate::value::Context;

/// GitHub's limit on nesting (operators, groups, calls, property accesses).
pub(crate) const MAX_DEPTH: usize = 50;
/// GitHub's limit on an expression's length, in UTF-16 code units.
pub(crate) const MAX_LENGTH: usize = 21_000;

/// The named values that Sorat's pipelines provide, for [`NameSet::with_named_values`].
/// `sorat` and `github` are the same context under two names.
pub const PIPELINE_CONTEXTS: &[&str] = &[
    "sorat", "github", "env", "vars", "secrets", "matrix", "needs", "steps", "job", "jobs",
    "runner", "inputs", "strategy",
];

/// Which stage found a syntax error; the test vectors tell the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorKind {
    /// A character sequence that is no token (`1 @abc`, `0xFZ`, an unterminated string).
    Lexing,
    /// Tokens in an order the grammar rejects, an unknown name, a wrong number of
    /// arguments, or nesting beyond 50 levels.
    Parsing,
}

impl ParseErrorKind {
    /// `lexing` or `parsing`, as the test vectors spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseErrorKind::Lexing => "lexing",
            ParseErrorKind::Parsing => "parsing",
        }
    }
}

/// A syntax error, located in the expression. It displays exactly as GitHub reports it:
/// `Unexpected symbol: '2'. Located at position 3 within expression: 1 2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}. Located at position {position} within expression: {expression}")]
pub struct ParseError {
    /// Lexing or parsing.
    pub kind: ParseErrorKind,
    /// What is wrong, with the offending token: `Unrecognized named-value: 'foo'`.
    pub message: String,
    /// 1-based index of the offending token's first character (counted in `char`s).
    pub position: usize,
    /// The whole expression, as given.
    pub expression: String,
}

impl ParseError {
    /// The byte offset of [`ParseError::position`] in the expression, for callers that
    /// point into the text the expression came from.
    pub fn byte_offset(&self) -> usize {
        self.expression
            .char_indices()
            .nth(self.position.saturating_sub(1))
            .map_or(self.expression.len(), |(offset, _)| offset)
    }
}

/// The functions an expression may call. The string and JSON functions and `case` are
/// always available; `hashFiles` and the status functions only where a [`NameSet`] allows
/// them (GitHub allows `hashFiles` in steps and the status functions in `if`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Function {
    Case,
    Contains,
    StartsWith,
    EndsWith,
    Format,
    Join,
    ToJson,
    FromJson,
    HashFiles,
    Success,
    Failure,
    Always,
    Cancelled,
}

impl Function {
    fn from_name(name: &str) -> Option<Function> {
        let function = match name.to_ascii_lowercase().as_str() {
            "case" => Function::Case,
            "contains" => Function::Contains,
            "startswith" => Function::StartsWith,
            "endswith" => Function::EndsWith,
            "format" => Function::Format,
            "join" => Function::Join,
            "tojson" => Function::ToJson,
            "fromjson" => Function::FromJson,
            "hashfiles" => Function::HashFiles,
            "success" => Function::Success,
            "failure" => Function::Failure,
            "always" => Function::Always,
            "cancelled" => Function::Cancelled,
            _ => return None,
        };
        Some(function)
    }

    /// The least and most arguments GitHub accepts.
    fn arity(self) -> (usize, usize) {
        match self {
            Function::Case => (3, usize::MAX),
            Function::Contains | Function::StartsWith | Function::EndsWith => (2, 2),
            Function::Format | Function::HashFiles => (1, 255),
            Function::Join => (1, 2),
            Function::ToJson | Function::FromJson => (1, 1),
            Function::Success | Function::Failure | Function::Always | Function::Cancelled => {
                (0, 0)
            }
        }
    }

    pub(crate) fn is_status(self) -> bool {
        matches!(
            self,
            Function::Success | Function::Failure | Function::Always | Function::Cancelled
        )
    }
}

/// Declares what an expression may name: the named values (contexts such as `github`,
/// `env`, `matrix`) and the host functions (`hashFiles`, status functions). A name not
/// declared is a parse error, as in GitHub: `Unrecognized named-value: 'x'`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    named_values: HashSet<String>,
    hash_files: bool,
    status_functions: bool,
}

impl NameSet {
    /// No named values, and only the functions that are always available.
    pub fn new() -> NameSet {
        NameSet::default()
    }

    /// Adds named values (case-insensitive).
    pub fn with_named_values<I, S>(mut self, names: I) -> NameSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for name in names {
            self.add_named_value(name.as_ref());
        }
        self
    }

    /// Adds one named value (case-insensitive).
    pub fn add_named_value(&mut self, name: &str) {
        self.named_values.insert(name.to_ascii_lowercase());
    }

    /// Allows `hashFiles(...)`.
    pub fn with_hash_files(mut self) -> NameSet {
        self.hash_files = true;
        self
    }

    /// Allows `success()`, `failure()`, `always()` and `cancelled()`.
    pub fn with_status_functions(mut self) -> NameSet {
        self.status_functions = true;
        self
    }

    /// Every name present in `context` and every function: what the test-vector runner
    /// uses, since a vector's contexts are exactly the names it may use.
    pub fn allowing_context(context: &Context) -> NameSet {
        NameSet::new()
            .with_named_values(context.names())
            .with_hash_files()
            .with_status_functions()
    }

    /// Whether `name` is a declared named value (case-insensitive).
    pub fn has_named_value(&self, name: &str) -> bool {
        self.named_values.contains(&name.to_ascii_lowercase())
    }

    fn allows(&self, function: Function) -> bool {
        match function {
            Function::HashFiles => self.hash_files,
            f if f.is_status() => self.status_functions,
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicalOp {
    And,
    Or,
}

#[derive(Debug, Clone)]
pub(crate) enum Index {
    /// `[*]` or `.*`: every element or property value, as a filtered array.
    Star,
    /// `[expr]` or `.name`.
    Key(Box<Node>),
}

/// A node of the syntax tree. Chains of comparisons (`a == b != c`, `1 < 2 < 3`) are kept
/// flat and folded left to right, so a long chain never deepens the tree; every other
/// kind of nesting is limited by the parser's depth check, which bounds the evaluator's
/// recursion too.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Literal(Literal),
    NamedValue(String),
    Index {
        target: Box<Node>,
        index: Index,
    },
    Not(Box<Node>),
    Compare {
        first: Box<Node>,
        rest: Vec<(CompareOp, Node)>,
    },
    Logical {
        op: LogicalOp,
        operands: Vec<Node>,
    },
    Call {
        function: Function,
        args: Vec<Node>,
    },
}

impl Node {
    pub(crate) fn uses_status_function(&self) -> bool {
        match self {
            Node::Literal(_) | Node::NamedValue(_) => false,
            Node::Index { target, index } => {
                target.uses_status_function()
                    || matches!(index, Index::Key(key) if key.uses_status_function())
            }
            Node::Not(inner) => inner.uses_status_function(),
            Node::Compare { first, rest } => {
                first.uses_status_function()
                    || rest.iter().any(|(_, node)| node.uses_status_function())
            }
            Node::Logical { operands, .. } => operands.iter().any(Node::uses_status_function),
            Node::Call { function, args } => {
                function.is_status() || args.iter().any(Node::uses_status_function)
            }
        }
    }
}

/// Parses `source` into its syntax tree; `None` for an empty (or all white space)
/// expression, which evaluates to `null`.
pub(crate) fn parse_tree(source: &str, names: &NameSet) -> Result<Option<Node>, ParseError> {
    if source.encode_utf16().count() > MAX_LENGTH {
        return Err(ParseError {
            kind: ParseErrorKind::Parsing,
            message: format!("Exceeded max expression length {MAX_LENGTH}"),
            position: 1,
            expression: source.to_owned(),
        });
    }
    let tokens = tokenize(source)?;
    let mut parser = Parser {
        tokens: &tokens,
        offset: 0,
        depth: 0,
        names,
        source,
    };
    if parser.at_end() {
        return Ok(None);
    }
    let root = parser.expression()?;
    if !parser.at_end() {
        return Err(parser.error(ErrorType::UnexpectedSymbol, parser.peek()));
    }
    Ok(Some(root))
}

#[derive(Debug, Clone, Copy)]
enum ErrorType {
    UnexpectedSymbol,
    UnexpectedEnd,
    UnrecognizedNamedValue,
    UnrecognizedFunction,
    TooFewParameters,
    TooManyParameters,
    EvenParameters,
    ExceededMaxDepth,
}

impl ErrorType {
    fn description(self) -> String {
        match self {
            ErrorType::UnexpectedSymbol => "Unexpected symbol".to_owned(),
            ErrorType::UnexpectedEnd => "Unexpected end of expression".to_owned(),
            ErrorType::UnrecognizedNamedValue => "Unrecognized named-value".to_owned(),
            ErrorType::UnrecognizedFunction => "Unrecognized function".to_owned(),
            ErrorType::TooFewParameters => "Too few parameters supplied".to_owned(),
            ErrorType::TooManyParameters => "Too many parameters supplied".to_owned(),
            ErrorType::EvenParameters => {
                "Even number of parameters supplied, requires an odd number of parameters"
                    .to_owned()
            }
            ErrorType::ExceededMaxDepth => format!("Exceeded max expression depth {MAX_DEPTH}"),
        }
    }
}

/// One grammar rule of the parser, to pass the operand rule of a binary level around.
type Rule<'p> = fn(&mut Parser<'p>) -> Result<Node, ParseError>;

/// A recursive-descent parser with GitHub's precedence, loosest first:
/// `||`, `&&`, `== !=`, `< <= > >=`, `!`, then `.`/`[]` after a name, call or group.
struct Parser<'p> {
    tokens: &'p [Token],
    offset: usize,
    depth: usize,
    names: &'p NameSet,
    source: &'p str,
}

impl<'p> Parser<'p> {
    fn expression(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let node = self.logical(LogicalOp::Or)?;
        self.leave(1);
        Ok(node)
    }

    fn logical(&mut self, op: LogicalOp) -> Result<Node, ParseError> {
        let (token_kind, operand): (TokenKind, Rule<'p>) = match op {
            LogicalOp::Or => (TokenKind::Or, |parser| parser.logical(LogicalOp::And)),
            LogicalOp::And => (TokenKind::And, Self::equality),
        };
        let first = operand(self)?;
        if !self.check(token_kind) {
            return Ok(first);
        }
        self.enter()?;
        let mut operands = vec![first];
        while self.matches(token_kind) {
            operands.push(operand(self)?);
        }
        self.leave(1);
        Ok(Node::Logical { op, operands })
    }

    fn equality(&mut self) -> Result<Node, ParseError> {
        self.comparison_chain(
            &[
                (TokenKind::EqualEqual, CompareOp::Equal),
                (TokenKind::BangEqual, CompareOp::NotEqual),
            ],
            Self::comparison,
        )
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        self.comparison_chain(
            &[
                (TokenKind::Greater, CompareOp::Greater),
                (TokenKind::GreaterEqual, CompareOp::GreaterEqual),
                (TokenKind::Less, CompareOp::Less),
                (TokenKind::LessEqual, CompareOp::LessEqual),
            ],
            Self::unary,
        )
    }

    fn comparison_chain(
        &mut self,
        operators: &[(TokenKind, CompareOp)],
        operand: Rule<'p>,
    ) -> Result<Node, ParseError> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        while let Some(op) = operators
            .iter()
            .find(|(kind, _)| self.check(*kind))
            .map(|(_, op)| *op)
        {
            self.advance();
            rest.push((op, operand(self)?));
        }
        if rest.is_empty() {
            Ok(first)
        } else {
            Ok(Node::Compare {
                first: Box::new(first),
                rest,
            })
        }
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        if self.matches(TokenKind::Bang) {
            self.enter()?;
            let inner = self.unary()?;
            self.leave(1);
            return Ok(Node::Not(Box::new(inner)));
        }
        self.index()
    }

    /// Property and index accesses, allowed only after a named value, a call or a
    /// parenthesised group (`'abc'[0]` is a syntax error, as in GitHub).
    fn index(&mut self) -> Result<Node, ParseError> {
        let (mut node, indexable) = self.call()?;
        if !indexable {
            return Ok(node);
        }
        let mut levels = 0;
        loop {
            if self.matches(TokenKind::LeftBracket) {
                let index = if self.matches(TokenKind::Star) {
                    Index::Star
                } else {
                    Index::Key(Box::new(self.expression()?))
                };
                self.consume(TokenKind::RightBracket)?;
                self.enter()?;
                levels += 1;
                node = Node::Index {
                    target: Box::new(node),
                    index,
                };
            } else if self.matches(TokenKind::Dot) {
                self.enter()?;
                levels += 1;
                let index = if self.matches(TokenKind::Identifier) {
                    let name = self.previous().lexeme.clone();
                    Index::Key(Box::new(Node::Literal(Literal::String(name))))
                } else if self.matches(TokenKind::Star) {
                    Index::Star
                } else {
                    return Err(self.error(ErrorType::UnexpectedSymbol, self.peek()));
                };
                node = Node::Index {
                    target: Box::new(node),
                    index,
                };
            } else {
                break;
            }
        }
        self.leave(levels);
        Ok(node)
    }

    /// A named value or a function call; anything else is a primary. The flag says
    /// whether accesses may follow.
    fn call(&mut self) -> Result<(Node, bool), ParseError> {
        if !self.check(TokenKind::Identifier) {
            return self.primary();
        }
        let identifier = self.advance();
        if !self.matches(TokenKind::LeftParen) {
            if !self.names.has_named_value(&identifier.lexeme) {
                return Err(self.error(ErrorType::UnrecognizedNamedValue, identifier));
            }
            return Ok((Node::NamedValue(identifier.lexeme.clone()), true));
        }
        let mut args = Vec::new();
        while !self.matches(TokenKind::RightParen) {
            args.push(self.expression()?);
            if !self.check(TokenKind::RightParen) {
                self.consume(TokenKind::Comma)?;
            }
        }
        let function = Function::from_name(&identifier.lexeme)
            .filter(|function| self.names.allows(*function))
            .ok_or_else(|| self.error(ErrorType::UnrecognizedFunction, identifier))?;
        let (min, max) = function.arity();
        if args.len() < min {
            return Err(self.error(ErrorType::TooFewParameters, identifier));
        }
        if args.len() > max {
            return Err(self.error(ErrorType::TooManyParameters, identifier));
        }
        if function == Function::Case && args.len() % 2 == 0 {
            return Err(self.error(ErrorType::EvenParameters, identifier));
        }
        Ok((Node::Call { function, args }, true))
    }

    fn primary(&mut self) -> Result<(Node, bool), ParseError> {
        let token = self.peek();
        let literal = match token.kind {
            TokenKind::False => Some(Literal::Bool(false)),
            TokenKind::True => Some(Literal::Bool(true)),
            TokenKind::Null => Some(Literal::Null),
            TokenKind::Number => Some(Literal::Number(token.number)),
            TokenKind::String => Some(Literal::String(token.string.clone())),
            _ => None,
        };
        if let Some(literal) = literal {
            self.advance();
            return Ok((Node::Literal(literal), false));
        }
        if self.matches(TokenKind::LeftParen) {
            let inner = self.expression()?;
            if self.at_end() {
                return Err(self.error(ErrorType::UnexpectedEnd, self.previous()));
            }
            self.consume(TokenKind::RightParen)?;
            return Ok((inner, true));
        }
        if self.at_end() {
            // Point at the last token before the end.
            return Err(self.error(ErrorType::UnexpectedEnd, self.previous()));
        }
        Err(self.error(ErrorType::UnexpectedSymbol, token))
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(ErrorType::ExceededMaxDepth, self.peek()));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    fn peek(&self) -> &'p Token {
        // The token list always ends with `Eof`, and `advance` never moves past it.
        &self.tokens[self.offset.min(self.tokens.len() - 1)]
    }

    fn previous(&self) -> &'p Token {
        &self.tokens[self.offset.saturating_sub(1)]
    }

    fn at_end(&self) -> bool {
        self.peek().kind == TokenKind::Eof
    }

    fn check(&self, kind: TokenKind) -> bool {
        !self.at_end() && self.peek().kind == kind
    }

    fn advance(&mut self) -> &'p Token {
        if !self.at_end() {
            self.offset += 1;
        }
        self.previous()
    }

    fn matches(&mut self, kind: TokenKind) -> bool {
        if self.check(kind) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn consume(&mut self, kind: TokenKind) -> Result<(), ParseError> {
        if self.matches(kind) {
            Ok(())
        } else {
            Err(self.error(ErrorType::UnexpectedSymbol, self.peek()))
        }
    }

    fn error(&self, error: ErrorType, token: &Token) -> ParseError {
        ParseError {
            kind: ParseErrorKind::Parsing,
            message: format!("{}: '{}'", error.description(), token.display()),
            position: token.start + 1,
            expression: self.source.to_owned(),
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

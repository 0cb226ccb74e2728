//! A parsed expression, ready to evaluate any number of times.

use crate::eval::{EvalError, Host, evaluate};
use crate::parser::{NameSet, Node, ParseError, parse_tree};
use crate::value::{Context, Value};

/// A parsed expression: the text between `${{` and `}}`, or an `if:` condition.
///
/// ```
/// use sorat_expr::{parse, Context, NameSet, NoHost, Value};
///
/// let names = NameSet::new().with_named_values(["github"]);
/// let expr = parse("github.ref == 'refs/heads/main' && 'deploy' || 'skip'", &names)?;
/// let context = Context::from_json(&serde_json::json!({"github": {"ref": "refs/heads/main"}}))
///     .unwrap_or_default();
/// assert_eq!(expr.eval(&context, &NoHost)?, Value::from("deploy"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Option<Node>,
}

/// Parses an expression, allowing the named values and functions in `names`.
///
/// Errors carry GitHub's messages and positions; an empty expression parses and
/// evaluates to `null`.
pub fn parse(source: &str, names: &NameSet) -> Result<Expr, ParseError> {
    let root = parse_tree(source, names)?;
    Ok(Expr {
        source: source.to_owned(),
        root,
    })
}

impl Expr {
    /// The expression's text, as given to [`parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression is empty (only white space); it evaluates to `null`.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Evaluates the expression. Named values come from `context` (a declared name the
    /// context lacks reads as `null`); `hashFiles` and the status functions ask `host`.
    pub fn eval(&self, context: &Context, host: &dyn Host) -> Result<Value, EvalError> {
        evaluate(self.root.as_ref(), &self.source, context, host)
    }

    /// Whether the expression calls `success()`, `failure()`, `always()` or
    /// `cancelled()` anywhere. GitHub treats an `if:` without one as
    /// `success() && (<if>)`, so a step after a failure is skipped unless its condition
    /// mentions the job status.
    pub fn uses_status_function(&self) -> bool {
        self.root.as_ref().is_some_and(Node::uses_status_function)
    }
}

//! Properties that must hold for every input, checked with generated inputs.

#![allow(clippy::unwrap_used)]

use indexmap::IndexMap;
use proptest::prelude::*;
use sorat_expr::{Context, Expr, NameSet, NoHost, Template, Value, parse};

fn names() -> NameSet {
    NameSet::new()
        .with_named_values(["a", "b", "x", "github"])
        .with_hash_files()
        .with_status_functions()
}

fn eval(source: &str, context: &Context) -> Value {
    let expr: Expr = parse(source, &NameSet::allowing_context(context)).unwrap();
    expr.eval(context, &NoHost).unwrap()
}

/// Strings that exercise coercion: numeric text in every notation, white space, case.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just(" 0x10 ".to_owned()),
        Just("0o7".to_owned()),
        Just("1e3".to_owned()),
        Just("-0.0".to_owned()),
        Just("NaN".to_owned()),
        Just(" Infinity".to_owned()),
        Just("true".to_owned()),
        Just("ABC".to_owned()),
        Just("abc".to_owned()),
        Just("ı".to_owned()),
        Just("İ".to_owned()),
        "[a-zA-Z0-9 .+-]{0,6}",
        any::<String>(),
    ]
}

fn interesting_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(16.0),
        Just(1000.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        (-1000i32..1000).prop_map(f64::from),
        any::<f64>(),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        interesting_number().prop_map(Value::Number),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<IndexMap<_, _>>())),
        ]
    })
}

/// Values JSON can carry: finite numbers, and object keys unique ignoring case (as
/// `fromJSON` keeps only the first of keys that differ in case).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::num::f64::NORMAL.prop_map(serde_json::Value::from),
        prop::num::f64::SUBNORMAL.prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    let json = leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::vec(("[a-zA-Z_-]{0,4}|\\PC{0,3}", inner), 0..5)
                .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
        ]
    });
    json.prop_map(|json| Value::from_json(&json))
}

/// Text that looks like expressions, so the parser gets past the lexer often.
fn expression_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("github".to_owned()),
        Just("nope".to_owned()),
        Just(".".to_owned()),
        Just(".*".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("[*]".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just("!".to_owned()),
        Just(" == ".to_owned()),
        Just(" != ".to_owned()),
        Just(" < ".to_owned()),
        Just(" >= ".to_owned()),
        Just(" && ".to_owned()),
        Just(" || ".to_owned()),
        Just("'s'".to_owned()),
        Just("'{0}{1}'".to_owned()),
        Just("'".to_owned()),
        Just("1".to_owned()),
        Just("-.5e3".to_owned()),
        Just("0x1F".to_owned()),
        Just("NaN".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("format(".to_owned()),
        Just("fromJSON(".to_owned()),
        Just("toJSON(".to_owned()),
        Just("join(".to_owned()),
        Just("contains(".to_owned()),
        Just("case(".to_owned()),
        Just("hashFiles(".to_owned()),
        Just("success()".to_owned()),
        Just("${{".to_owned()),
        Just("}}".to_owned()),
        "\\PC{1,2}",
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

fn context_of(entries: &[(&str, Value)]) -> Context {
    entries
        .iter()
        .map(|(name, value)| (*name, value.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_and_evaluating_never_panic(source in prop_oneof![expression_like(), any::<String>()], a in any_value()) {
        let context = context_of(&[("a", a.clone()), ("b", a), ("github", Value::Null)]);
        if let Ok(expr) = parse(&source, &names()) {
            let _ = expr.eval(&context, &NoHost);
            let _ = expr.uses_status_function();
        }
        if let Ok(template) = Template::parse(&source, &names()) {
            let _ = template.eval_to_string(&context, &NoHost);
            let _ = template.mixes_text_and_expression();
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash(wrappers in prop::collection::vec(0usize..5, 0..120)) {
        let mut source = "a".to_owned();
        for wrapper in wrappers {
            source = match wrapper {
                0 => format!("({source})"),
                1 => format!("!{source}"),
                2 => format!("toJSON({source})"),
                3 => format!("a[{source}]"),
                _ => format!("{source} || {source}"),
            };
            if source.len() > 30_000 {
                break;
            }
        }
        let context = context_of(&[("a", Value::from("x"))]);
        if let Ok(expr) = parse(&source, &names()) {
            let _ = expr.eval(&context, &NoHost);
        }
    }
}

proptest! {
    #[test]
    fn equality_is_symmetric(a in any_value(), b in any_value()) {
        let context = context_of(&[("a", a), ("b", b)]);
        let forward = eval("a == b", &context);
        prop_assert_eq!(&forward, &eval("b == a", &context));
        prop_assert_eq!(eval("a != b", &context), Value::Bool(!forward.is_truthy()));
        // `<=` is `==` or `<`, and `<` is the mirror of `>`.
        prop_assert_eq!(eval("a < b", &context), eval("b > a", &context));
        prop_assert_eq!(eval("a <= b", &context), eval("b >= a", &context));
    }

    #[test]
    fn double_negation_is_truthiness(x in any_value()) {
        let context = context_of(&[("x", x.clone())]);
        prop_assert_eq!(eval("!!x", &context), Value::Bool(x.is_truthy()));
        // `&&` and `||` return an operand, chosen by truthiness.
        let chosen = if x.is_truthy() { Value::from("then") } else { x.clone() };
        prop_assert!(eval("x && 'then'", &context).same_as(&chosen));
    }

    #[test]
    fn from_json_of_to_json_round_trips(value in json_value()) {
        let context = context_of(&[("x", value.clone())]);
        let round_tripped = eval("fromJSON(toJSON(x))", &context);
        prop_assert!(round_tripped.same_as(&value), "{:?} became {:?}", value, round_tripped);
        prop_assert_eq!(eval("toJSON(x)", &context), Value::String(value.to_pretty_json()));
        // The same JSON text reads back through serde as the same value.
        let via_serde = Value::from_json(&serde_json::from_str(&value.to_pretty_json()).unwrap());
        prop_assert!(via_serde.same_as(&value));
    }

    #[test]
    fn json_numbers_read_back_as_the_same_double(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        // toJSON prints the shortest text that reads back as the same double, and the
        // lexer reads it back exactly.
        let context = context_of(&[("x", Value::Number(x))]);
        let Value::String(text) = eval("toJSON(x)", &context) else { panic!("toJSON gave no string") };
        let read_back = eval(&text, &Context::new());
        prop_assert_eq!(read_back, Value::Number(x), "{} read back differently", text);
    }

    #[test]
    fn displayed_numbers_read_back(mantissa in -999_999_999_999_999i64..=999_999_999_999_999, decimals in 0u32..=6) {
        // A number with at most 15 significant digits displays as its shortest decimal,
        // which reads back as the same double and compares equal to it as a string.
        let digits = mantissa.unsigned_abs().to_string();
        let padded = format!("{digits:0>width$}", width = decimals as usize + 1);
        let (whole, fraction) = padded.split_at(padded.len() - decimals as usize);
        let sign = if mantissa < 0 { "-" } else { "" };
        let text = if decimals == 0 { format!("{sign}{whole}") } else { format!("{sign}{whole}.{fraction}") };
        let x: f64 = text.parse().unwrap();
        let displayed = Value::Number(x).to_display_string();
        prop_assert_eq!(eval(&displayed, &Context::new()), Value::Number(x));
        prop_assert_eq!(displayed.parse::<f64>().unwrap(), x);
        let context = context_of(&[("x", Value::Number(x)), ("a", Value::String(displayed.clone()))]);
        prop_assert_eq!(eval("x == a", &context), Value::Bool(true));
        prop_assert_eq!(eval("format('{0}', x)", &context), Value::String(displayed));
    }

    #[test]
    fn display_is_a_fixed_point(x in interesting_number()) {
        // Coercing a number to a string, reading that as a number literal and coercing it
        // again changes nothing the second time.
        let once = Value::Number(x).to_display_string();
        let Value::Number(reread) = eval(&once, &Context::new()) else {
            panic!("{once} did not read as a number");
        };
        prop_assert_eq!(Value::Number(reread).to_display_string(), once);
    }
}

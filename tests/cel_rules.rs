//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated with a CEL interpreter: the fast
//! tier. The end-to-end suite applies the same cases to the real API server
//! (`tests/e2e/server_validation.rs`), which compiles the rules, enforces them and checks their
//! cost budget at install. Each rule in `crds/` must compile, accept the valid cases and refuse
//! the invalid ones of `tests/common/cel_cases.rs`, and every rule must have cases there.
use std::collections::BTreeSet;
use std::sync::Arc;

use cel_interpreter::extractors::This;
use cel_interpreter::{Context, Program, Value};
use serde_json::Value as Json;

#[path = "common/cel_cases.rs"]
mod cel_cases;
use cel_cases::{cases, rules, Rule};

/// `lowerAscii` comes from the Kubernetes CEL string library, not the CEL standard.
fn lower_ascii(This(this): This<Arc<String>>) -> String {
    this.to_ascii_lowercase()
}

fn evaluate(rule: &Rule, this: &Json, old: Option<&Json>) -> Result<bool, String> {
    let program = Program::compile(&rule.expression).map_err(|e| format!("{e:?}"))?;
    let mut context = Context::default();
    context.add_function("lowerAscii", lower_ascii);
    context
        .add_variable("self", this.clone())
        .map_err(|e| e.to_string())?;
    if let Some(old) = old {
        context
            .add_variable("oldSelf", old.clone())
            .map_err(|e| e.to_string())?;
    }
    match program.execute(&context).map_err(|e| e.to_string())? {
        Value::Bool(ok) => Ok(ok),
        other => Err(format!("a rule must give a bool, gave {other:?}")),
    }
}

#[test]
fn every_rule_compiles() {
    let rules = rules();
    assert!(rules.len() >= 7, "found {} rules", rules.len());
    for rule in &rules {
        if let Err(err) = Program::compile(&rule.expression) {
            panic!("{} {}: {err:?}\n{}", rule.file, rule.path, rule.expression);
        }
    }
}

#[test]
fn rules_accept_valid_and_refuse_invalid_specs() {
    let rules = rules();
    let mut covered = BTreeSet::new();
    for (file, path, this, old, expected) in cases() {
        let on_path: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.file == file && r.path == path)
            // A transition rule (oldSelf) is only evaluated on updates.
            .filter(|r| old.is_some() || !r.expression.contains("oldSelf"))
            .collect();
        assert!(!on_path.is_empty(), "no rule on {file} {path}");
        let verdicts: Vec<bool> = on_path
            .iter()
            .map(|rule| {
                covered.insert(rule.expression.clone());
                evaluate(rule, &this, old.as_ref())
                    .unwrap_or_else(|err| panic!("{file} {path}: {err}\n{}", rule.expression))
            })
            .collect();
        assert_eq!(
            verdicts.iter().all(|ok| *ok),
            expected,
            "{file} {path} self={this} oldSelf={old:?}"
        );
    }
    let untested: Vec<&Rule> = rules
        .iter()
        .filter(|r| !covered.contains(&r.expression))
        .collect();
    assert!(untested.is_empty(), "rules without cases: {untested:#?}");
}

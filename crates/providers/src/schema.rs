//! A JSON Schema validator for the subset vendors' structured-output modes accept.
//!
//! Supported: `type` (one or a list), `properties`, `required`, `additionalProperties`
//! (boolean or schema), `items`, `enum`, `const`, `minimum`/`maximum` and their exclusive
//! forms, `minLength`/`maxLength`, `minItems`/`maxItems`, `anyOf`, `oneOf`, `allOf`, `not`,
//! and local `$ref`s (`#/$defs/..`, `#/definitions/..`). Other keywords (`pattern`, `format`)
//! are ignored, as several vendors do; a full validator crate would add a regex engine
//! and far more code for keywords these schemas do not use.

use serde_json::Value;

/// Validates `value` against `schema`; returns every violation with its JSON pointer.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "", &mut errors, 0);
    errors
}

const MAX_DEPTH: usize = 64;

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix('#')?;
    root.pointer(path)
}

fn check(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH {
        errors.push(format!("{at}: schema nesting too deep"));
        return;
    }
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{at}: no value is allowed here"));
        }
        return;
    };
    let here = if at.is_empty() { "/" } else { at };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match resolve(root, r) {
            Some(target) => check(root, target, v, at, errors, depth + 1),
            None => errors.push(format!("{here}: unresolvable $ref {r}")),
        }
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => {
            errors.push(format!("{here}: expected {t}, got {}", kind(v)));
            return;
        }
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(|t| type_matches(t, v)) => {
            errors.push(format!("{here}: expected one of {}, got {}", Value::Array(ts.clone()), kind(v)));
            return;
        }
        _ => {}
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{here}: {v} is not one of {}", Value::Array(e.clone())));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errors.push(format!("{here}: must equal {c}"));
    }
    if let Some(n) = v.as_f64() {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        if num("minimum").is_some_and(|m| n < m) {
            errors.push(format!("{here}: {n} is below the minimum"));
        }
        if num("maximum").is_some_and(|m| n > m) {
            errors.push(format!("{here}: {n} is above the maximum"));
        }
        if num("exclusiveMinimum").is_some_and(|m| n <= m) {
            errors.push(format!("{here}: {n} must be above the exclusive minimum"));
        }
        if num("exclusiveMaximum").is_some_and(|m| n >= m) {
            errors.push(format!("{here}: {n} must be below the exclusive maximum"));
        }
    }
    let count = |k: &str| s.get(k).and_then(Value::as_u64);
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as u64;
        if count("minLength").is_some_and(|m| len < m) {
            errors.push(format!("{here}: string shorter than {}", count("minLength").unwrap_or(0)));
        }
        if count("maxLength").is_some_and(|m| len > m) {
            errors.push(format!("{here}: string longer than {}", count("maxLength").unwrap_or(0)));
        }
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if count("minItems").is_some_and(|m| len < m) {
            errors.push(format!("{here}: fewer than {} items", count("minItems").unwrap_or(0)));
        }
        if count("maxItems").is_some_and(|m| len > m) {
            errors.push(format!("{here}: more than {} items", count("maxItems").unwrap_or(0)));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(root, item_schema, item, &format!("{at}/{i}"), errors, depth + 1);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for name in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(name) {
                    errors.push(format!("{here}: missing required property {name:?}"));
                }
            }
        }
        for (k, child) in obj {
            let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(root, ps, child, &path, errors, depth + 1),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{here}: unexpected property {k:?}"));
                    }
                    Some(extra @ Value::Object(_)) => check(root, extra, child, &path, errors, depth + 1),
                    _ => {}
                },
            }
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(root, sub, v, at, errors, depth + 1);
        }
    }
    let passes = |sub: &Value| {
        let mut e = Vec::new();
        check(root, sub, v, at, &mut e, depth + 1);
        e.is_empty()
    };
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(passes)
    {
        errors.push(format!("{here}: matches none of anyOf"));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            errors.push(format!("{here}: matches {n} of oneOf, expected exactly 1"));
        }
    }
    if let Some(not) = s.get("not")
        && passes(not)
    {
        errors.push(format!("{here}: must not match the `not` schema"));
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    macro_rules! cases {
        ($($name:ident: $schema:expr, $value:expr => $ok:expr;)*) => {$(
            #[test]
            fn $name() {
                let errs = validate(&$schema, &$value);
                assert_eq!(errs.is_empty(), $ok, "{errs:?}");
            }
        )*};
    }

    fn ticket() -> Value {
        json!({"type": "object", "additionalProperties": false, "required": ["intent", "confidence"],
            "properties": {
                "intent": {"type": "string", "enum": ["card_payment", "withdrawal", "fraud"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "amount": {"$ref": "#/$defs/money"}
            },
            "$defs": {"money": {"type": "object", "required": ["value"], "properties": {"value": {"type": "integer"}}}}})
    }

    cases! {
        valid_ticket: ticket(), json!({"intent": "fraud", "confidence": 0.9, "tags": ["a"], "amount": {"value": 10}}) => true;
        missing_required: ticket(), json!({"intent": "fraud"}) => false;
        bad_enum: ticket(), json!({"intent": "hello", "confidence": 0.5}) => false;
        above_maximum: ticket(), json!({"intent": "fraud", "confidence": 1.5}) => false;
        extra_property: ticket(), json!({"intent": "fraud", "confidence": 0.5, "x": 1}) => false;
        too_many_items: ticket(), json!({"intent": "fraud", "confidence": 0.5, "tags": ["a","b","c","d"]}) => false;
        ref_is_followed: ticket(), json!({"intent": "fraud", "confidence": 0.5, "amount": {"value": 1.5}}) => false;
        any_of: json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}), json!(3) => true;
        one_of_both: json!({"oneOf": [{"type": "number"}, {"type": "integer"}]}), json!(3) => false;
        type_list: json!({"type": ["string", "null"]}), json!(null) => true;
    }
}

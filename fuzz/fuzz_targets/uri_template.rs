//! RFC 6570 URI templates, compiled from arbitrary text and matched against arbitrary topics.
//!
//! Properties:
//! - size bounds hold before any work: a template longer than `MAX_TEMPLATE_LEN` is refused as
//!   too long, whatever it holds, and a compiled one stays within a fixed memory estimate;
//! - every expansion the reference expander produces from fuzzed variable values (strings, lists,
//!   associative arrays, undefined) is matched by the compiled template: the matcher may
//!   over-approximate, never under-approximate;
//! - the selector built on it matches its own text, and the store's cached answer equals the
//!   uncached one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicksilver_fuzz::reference::{expand_template, Value};
use quicksilver_protocol::template::{TemplateError, UriTemplate, MAX_TEMPLATE_LEN};
use quicksilver_protocol::{Selector, SelectorStore};

/// The input, one item per line so seeds stay readable: the template, a topic, then one value per
/// line: `!` undefined, `@a<TAB>b` a list, `%k<RS>v<TAB>k2<RS>v2` an associative array (RS is
/// 0x1E), anything else a string (a leading `=` is dropped, so `=@x` is the string `@x`).
struct Input {
    template: String,
    topic: String,
    values: Vec<Value>,
}

fn decode(data: &[u8]) -> Input {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default().to_string();
    let topic = lines.next().unwrap_or_default().to_string();
    let values = lines
        .map(|line| {
            if line == "!" {
                Value::Undef
            } else if let Some(items) = line.strip_prefix('@') {
                Value::List(items.split('\t').map(str::to_string).collect())
            } else if let Some(items) = line.strip_prefix('%') {
                Value::Assoc(
                    items
                        .split('\t')
                        .map(|kv| {
                            let (k, v) = kv.split_once('\u{1e}').unwrap_or((kv, ""));
                            (k.to_string(), v.to_string())
                        })
                        .collect(),
                )
            } else {
                Value::Str(line.strip_prefix('=').unwrap_or(line).to_string())
            }
        })
        .collect();
    Input {
        template,
        topic,
        values,
    }
}

/// Far above the few hundred KiB the largest allowed template is estimated at.
const MEMORY_CEILING: usize = 4 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Input {
        template,
        topic,
        values,
    } = decode(data);

    if template.len() <= MAX_TEMPLATE_LEN {
        let padded = format!(
            "{template}{}",
            "a".repeat(MAX_TEMPLATE_LEN + 1 - template.len())
        );
        assert_eq!(
            UriTemplate::compile(&padded).unwrap_err(),
            TemplateError::TooLong {
                max: MAX_TEMPLATE_LEN
            }
        );
    }

    let compiled = UriTemplate::compile(&template);
    if template.len() > MAX_TEMPLATE_LEN {
        assert!(matches!(compiled, Err(TemplateError::TooLong { .. })));
        return;
    }
    let Ok(compiled) = compiled else {
        return;
    };
    assert!(compiled.approx_memory() <= MEMORY_CEILING, "{template:?}");
    let _ = compiled.is_match(&topic);

    for vals in [&values[..], &[]] {
        if let Some(expansion) = expand_template(&template, vals) {
            assert!(
                compiled.is_match(&expansion),
                "template {template:?} does not match its expansion {expansion:?} (pattern {})",
                compiled.pattern()
            );
        }
    }

    if template.contains('{') {
        let selector = Selector::compile(&template).expect("compiled above");
        assert!(selector.matches(&template));
        let store = SelectorStore::new(16, 64);
        let cached = store.compile(&template).expect("compiled above");
        for t in [topic.as_str(), template.as_str()] {
            assert_eq!(store.matches(&cached, t), selector.matches(t));
            assert_eq!(store.matches(&cached, t), selector.matches(t));
        }
    }
});

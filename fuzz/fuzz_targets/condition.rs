//! The `if:` language: any text parsed, and what parses evaluated against a push's
//! facts. Must never panic, overflow the stack or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runway::config::condition::{self, Facts};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut facts = Facts::default();
    for (k, v) in [("type", "push"), ("branch", "master"), ("repo", "o/app"), ("os", "linux")] {
        facts.vars.insert(k.into(), v.into());
    }
    facts.env.insert("DEPLOY".into(), "true".into());
    if let Ok(expr) = condition::parse(text) {
        let _ = expr.eval(&facts);
    }
    let _ = condition::excerpt(text, text.len() / 2);
});

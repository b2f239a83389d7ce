//! The YAML + config engine and the planner on any bytes, as a push delivers them:
//! decode (size, UTF-8, NUL), YAML with aliases and merges, normalisation against
//! Travis's schema, then the plan of a push to master. Must never panic, hang or grow
//! without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runway::config;
use runway::event::BuildEvent;
use runway::plan::{self, Settings};

fuzz_target!(|data: &[u8]| {
    let loaded = config::load_bytes(data);
    for d in &loaded.diagnostics {
        let _ = d.render(".travis.yml");
    }
    if loaded.unreadable().is_none() {
        let event = BuildEvent {
            repo: "o/app".into(),
            branch: Some("master".into()),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            commit_message: "fuzz".into(),
            ..BuildEvent::default()
        };
        let _ = plan::plan(&loaded.config, &event, &Settings::default());
    }
});

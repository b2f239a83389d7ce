//! Build badges (`GET /badge/OWNER/REPO.svg?branch=B`): the state of a branch's last
//! finished push build drawn as Travis's badge was ("build | passing"), as SVG. Pure:
//! a state in, the badge's text, colour and SVG out.

use crate::store::Status;

/// What a badge says on its right and in which colour.
pub fn look(state: Option<Status>) -> (&'static str, &'static str) {
    match state {
        Some(Status::Passed) => ("passing", "#4c1"),
        Some(Status::Failed) => ("failing", "#e05d44"),
        Some(Status::Errored) => ("error", "#9f9f9f"),
        Some(Status::Canceled) => ("canceled", "#9f9f9f"),
        _ => ("unknown", "#9f9f9f"),
    }
}

/// The width text takes in 11 px Verdana, near enough for a badge.
fn width(text: &str) -> usize {
    text.chars().count() * 7 + 10
}

/// The SVG of a badge reading `label | value` on `colour`.
pub fn svg(label: &str, value: &str, colour: &str) -> String {
    let (l, v) = (width(label), width(value));
    let total = l + v;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" aria-label=\"{label}: {value}\">\
<title>{label}: {value}</title>\
<linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/><stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
<clipPath id=\"r\"><rect width=\"{total}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
<g clip-path=\"url(#r)\"><rect width=\"{l}\" height=\"20\" fill=\"#555\"/><rect id=\"state\" x=\"{l}\" width=\"{v}\" height=\"20\" fill=\"{colour}\"/><rect width=\"{total}\" height=\"20\" fill=\"url(#s)\"/></g>\
<g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" font-size=\"11\">\
<text x=\"{lx}\" y=\"14\">{label}</text><text id=\"value\" x=\"{vx}\" y=\"14\">{value}</text></g></svg>",
        lx = l / 2,
        vx = l + v / 2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_words_and_colour() {
        assert_eq!(look(Some(Status::Passed)), ("passing", "#4c1"));
        assert_eq!(look(Some(Status::Failed)).0, "failing");
        assert_eq!(look(None).0, "unknown");
        let s = svg("build", "passing", "#4c1");
        assert!(s.starts_with("<svg") && s.contains(">passing</text>") && s.contains("#4c1"));
    }
}

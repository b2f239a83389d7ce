//! Prints each condition read from stdin (one per line) as travis-conditions' parser
//! prints its result (`OK <sexp>` in Ruby's inspect syntax, or `ERR`), to compare the
//! port with the original line by line (`ruby` running travis-conditions' parser.rb on
//! the same lines gives the other side). With `--eval`, prints `true`, `false` or `ERR`
//! for each against fixed facts (see `facts`).

use runway::config::condition;
use std::io::BufRead;

// The facts `--eval` uses: the ones the oracle's values were computed against.
include!("../tests/fixtures/travis-conditions/facts.rs");

fn main() {
    let eval = std::env::args().any(|a| a == "--eval");
    let f = oracle_facts();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match (condition::parse(&line), eval) {
            (Ok(e), false) => println!("OK\t{}", e.sexp()),
            (Ok(e), true) => match e.eval(&f) {
                Ok(b) => println!("{b}"),
                Err(_) => println!("ERR"),
            },
            (Err(_), _) => println!("ERR"),
        }
    }
}

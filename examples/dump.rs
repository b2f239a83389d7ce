//! scratch
fn main() {
    let t = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    println!("{:#?}", runway::config::load(&t).config.root);
}

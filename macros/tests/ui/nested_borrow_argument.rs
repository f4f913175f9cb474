#[procwire_macros::service]
pub trait S {
    fn f(&self, x: Option<&str>);
}

fn main() {}

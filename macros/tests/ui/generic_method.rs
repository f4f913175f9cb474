#[procwire_macros::service]
pub trait S {
    fn f<T>(&self, x: T);
}

fn main() {}

#[procwire_macros::service]
pub trait S {
    fn a<T>(&self, x: T);
    fn b(&mut self);
    #[procwire(fast)]
    fn c(&self);
}

fn main() {}

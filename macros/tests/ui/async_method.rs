#[procwire_macros::service]
pub trait S {
    async fn f(&self) -> i32;
}

fn main() {}

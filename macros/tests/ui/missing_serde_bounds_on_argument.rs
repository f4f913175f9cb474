// It describes its structure; only serde is missing.
#[derive(procwire_macros::Schema)]
pub struct NotSerde;

#[procwire_macros::service]
pub trait S {
    fn f(&self, x: NotSerde);
}

fn main() {}

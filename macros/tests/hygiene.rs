//! The expansion names everything by absolute path: it compiles without the prelude, with
//! the runtime crate renamed (`wire` is `procwire-rpc` in this crate's Cargo.toml), and a
//! generated client and server talk to each other.

#[no_implicit_prelude]
mod bare {
    /// Derived without the prelude: a struct, a generic enum, a newtype.
    #[derive(::serde::Serialize, ::serde::Deserialize, ::procwire_macros::Schema)]
    pub struct Point {
        pub x: i64,
        pub y: i64,
    }

    #[derive(::serde::Serialize, ::serde::Deserialize, ::procwire_macros::Schema)]
    pub enum Shape<T> {
        Empty,
        Dot(T),
        Segment(T, T),
        Named { at: T, name: ::std::string::String },
    }

    #[derive(::serde::Serialize, ::serde::Deserialize, ::procwire_macros::Schema)]
    pub struct Meters(pub f64);

    #[::procwire_macros::service]
    pub trait Echo {
        fn shape(&self, shape: Shape<Point>, scale: Meters) -> ::core::option::Option<Point>;
        async fn later(&self, x: u32) -> u32;
        fn echo(&self, text: ::std::string::String) -> ::std::string::String;
        fn bytes(&self, data: &[u8]) -> ::std::vec::Vec<u8>;
        fn words(&self, text: &str, sep: &[u32]) -> usize;
        fn checked(&self, x: u32) -> ::core::result::Result<u32, ::std::string::String>;
        fn knows_its_caller(&self, ctx: &::wire::CallContext) -> bool;
        #[procwire(oneway)]
        fn note(&self, n: u64);
    }

    pub struct Impl;

    impl Echo for Impl {
        fn shape(&self, shape: Shape<Point>, _scale: Meters) -> ::core::option::Option<Point> {
            match shape {
                Shape::Dot(p) => ::core::option::Option::Some(p),
                _ => ::core::option::Option::None,
            }
        }
        async fn later(&self, x: u32) -> u32 {
            ::std::future::ready(x + 1).await
        }
        fn echo(&self, text: ::std::string::String) -> ::std::string::String {
            text
        }
        fn bytes(&self, data: &[u8]) -> ::std::vec::Vec<u8> {
            ::std::borrow::ToOwned::to_owned(data)
        }
        fn words(&self, text: &str, sep: &[u32]) -> usize {
            text.len() + sep.len()
        }
        fn checked(&self, x: u32) -> ::core::result::Result<u32, ::std::string::String> {
            ::core::result::Result::Err(::std::format!("no {x}"))
        }
        fn knows_its_caller(&self, ctx: &::wire::CallContext) -> bool {
            ctx.peer().credentials.is_some()
        }
        fn note(&self, _n: u64) {}
    }
}

#[test]
fn the_expansion_works_without_the_prelude_and_with_the_runtime_renamed() -> Result<(), Box<dyn std::error::Error>> {
    use bare::{EchoClient, EchoServer, Impl};
    let (server_end, client_end) = wire::transport::unix::pair()?;
    let server = wire::Server::new(EchoServer::new(Impl)).spawn_connection(server_end)?;
    let client = EchoClient::connect(client_end)?;
    assert_eq!(client.echo("hi".to_owned())?, "hi");
    // An async method, run on the server thread by the local runner.
    assert_eq!(client.later(1)?, 2);
    let dot = bare::Shape::Dot(bare::Point { x: 1, y: 2 });
    assert_eq!(client.shape(dot, bare::Meters(1.0))?.map(|p| (p.x, p.y)), Some((1, 2)));
    let signature = &EchoClient::info().methods[0].signature;
    assert_eq!(
        signature,
        "fn shape(enum {Empty, Dot({x: i64, y: i64}), Segment({x: i64, y: i64}, {x: i64, y: i64}), \
         Named {at: {x: i64, y: i64}, name: string}}, f64) -> option<{x: i64, y: i64}>"
    );
    assert_eq!(client.bytes(&[1, 2])?, vec![1, 2]);
    assert_eq!(client.words("abc", &[1, 2])?, 5);
    assert!(matches!(client.checked(4), Err(wire::CallError::Application(e)) if e == "no 4"));
    assert!(client.knows_its_caller()?);
    client.note(1)?;
    drop(client);
    server.wait()?;
    Ok(())
}

mod names {
    #![allow(dead_code, clippy::upper_case_acronyms)]

    /// Items of the user's that share names with the expansion's own: no clash.
    pub struct METHOD;
    pub struct Client;

    #[::procwire_macros::service]
    pub trait Clashing {
        /// A method named like the generated client's deadline helper.
        fn deadline(&self, deadline: u64) -> u64;
        #[deprecated = "use deadline"]
        fn old(&self);
        #[cfg(any())]
        fn compiled_out(&self);
        /// Takes the context, which the client does not pass.
        fn with_context(&self, ctx: &::wire::CallContext) -> u32;
    }

    pub struct Impl;

    impl Clashing for Impl {
        fn deadline(&self, deadline: u64) -> u64 {
            deadline + 1
        }
        fn old(&self) {}
        fn with_context(&self, _ctx: &::wire::CallContext) -> u32 {
            7
        }
    }
}

#[test]
fn user_names_do_not_clash_with_the_expansion() -> Result<(), Box<dyn std::error::Error>> {
    use names::{ClashingClient, ClashingServer, Impl};
    let (server_end, client_end) = wire::transport::unix::pair()?;
    let server = wire::Server::new(ClashingServer::new(Impl)).spawn_connection(server_end)?;
    let client = ClashingClient::connect(client_end)?;
    assert_eq!(client.deadline(41)?, 42);
    assert_eq!(client.start().deadline(1)?.wait()?, 2);
    assert_eq!(client.with_context()?, 7);
    #[allow(deprecated)]
    client.old()?;
    drop(client);
    server.wait()?;
    Ok(())
}

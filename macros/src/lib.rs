//! `#[procwire::service]`: one trait becomes a typed client and a server dispatcher.
//!
//! The macro is a pipeline: `ast` reads the trait into a model that keeps the original
//! syntax nodes (for error spans), `valid` checks the model and reports every problem at
//! once, each at the offending token, and `expand` generates one item per function. See the
//! attribute's documentation (re-exported as `procwire::service`) for what it generates.
#![deny(missing_docs)]

mod all;
mod ast;
mod datagram;
mod expand;
mod schema;
mod valid;

use proc_macro::TokenStream;

/// Turns a trait into a procwire service: a typed client, a pool client, a server
/// dispatcher, and the signature of each method that the handshake exchanges.
///
/// ```
/// #[procwire_macros::service]
/// pub trait Calc {
///     /// Adds two numbers.
///     fn add(&self, a: i64, b: i64) -> i64;
///     /// Divides; an application error travels typed.
///     fn div(&self, a: i64, b: i64) -> Result<i64, String>;
///     /// Borrowed arguments work on both sides; bytes travel as one byte string.
///     fn checksum(&self, data: &[u8]) -> u32;
///     /// Fire and forget: no reply is awaited.
///     #[procwire(oneway)]
///     fn log(&self, line: String);
/// }
///
/// struct MyCalc;
/// impl Calc for MyCalc {
///     fn add(&self, a: i64, b: i64) -> i64 { a + b }
///     fn div(&self, a: i64, b: i64) -> Result<i64, String> {
///         if b == 0 { Err("divide by zero".into()) } else { Ok(a / b) }
///     }
///     fn checksum(&self, data: &[u8]) -> u32 { data.iter().map(|&b| b as u32).sum() }
///     fn log(&self, line: String) { eprintln!("{line}"); }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (server_end, client_end) = wire::transport::unix::pair()?;
/// let server = wire::Server::new(CalcServer::new(MyCalc)).spawn_connection(server_end)?;
/// let calc = CalcClient::connect(client_end)?;
/// assert_eq!(calc.add(2, 3)?, 5);
/// assert!(matches!(calc.div(1, 0), Err(wire::CallError::Application(e)) if e == "divide by zero"));
/// assert_eq!(calc.checksum(&[1, 2, 3])?, 6);
/// calc.log("hello".into())?;
/// drop(calc);
/// server.wait()?;
/// # Ok(()) }
/// ```
///
/// # What it generates, for a trait `Calc`
///
/// - The trait itself, unchanged but for `#[procwire(...)]` attributes.
/// - `CalcClient`: `connect(transport)`, `connect_with(transport, config)`, then one method
///   per trait method with the same arguments, returning `Result<T, RpcError>`, or
///   `Result<T, CallError<E>>` when the trait method returns `Result<T, E>`.
///   `with_deadline(instant)` and `with_timeout(duration)` return a copy of the client
///   whose calls carry that deadline; `start()` and `try_start()` return a view whose methods
///   send the call and return a `PendingCall` to wait on, poll or drop (dropping cancels the
///   call and tells the server); `try_start` fails with `WouldBlock` instead of waiting for
///   room to send. `CalcClient::SERVICE` names the service, and `CalcClient::info()` lists
///   its methods' signatures.
/// - `CalcAsyncClient`: the same methods as `CalcClient`, as `async fn`s returning the same
///   types, with the same `connect`, `connect_with`, `from_client`, `with_deadline` and
///   `with_timeout` (and `From<CalcClient>`). The futures run on any executor: no thread of
///   their own and none borrowed per call; the task that awaits a reply reads it (see
///   `procwire_rpc::Client::call_async`). Dropping a call's future before it is ready
///   cancels the call on the server; a missed deadline is `RpcError::DeadlineExceeded`; a
///   one-way call is ready once sent. A `PendingCall` from `start()` is a `Future` too.
/// - `CalcPool`: a client for a whole pool of workers, one endpoint each (`unix:PATH` or
///   `tcp:HOST:PORT`; with an embedded supervisor, `Supervisor::endpoints("calc")`).
///   `new(endpoints)` and `with_config(endpoints, config)` connect nothing yet; the workers
///   are connected in the background from the first call on. It has one method per trait
///   method, with the same arguments and results as `CalcClient`'s, and the same
///   `with_deadline`, `with_timeout`, `start()` and `try_start()`; a call given no deadline
///   has the configuration's `call_timeout` (30 s with `new`, from
///   `ClientConfig::for_pool`). Each call goes to the worker with the fewest calls
///   outstanding, and a worker that hangs, or does not answer, is skipped (see
///   `procwire_rpc::pool` for the routing and the back-off); a worker whose connection is
///   gone is connected again, so a restarted worker is called again. A call in flight on a
///   worker that dies fails with an error naming that worker and saying whether the worker
///   stopped or died; it is never dropped silently and never answered twice. A call that did
///   not run (never sent, or refused unread by a worker that was stopping:
///   `RpcError::is_safe_to_retry`) is sent to another worker, whatever the method.
/// - `CalcAsyncPool`: `CalcPool`'s constructors, routing, retries and deadlines, with its
///   methods as `async fn`s (and `From<CalcPool>`); waiting for a worker to be connected
///   leaves a waker, so no executor thread is ever blocked.
/// - `CalcPool::all()`, a `CalcPoolAll` view with one method per trait method that calls
///   every worker of the pool at once, with the pool's deadline for all, and returns a
///   `Vec<WorkerReply<T>>` by worker index (`WorkerReply<T, CallError<E>>` for a method
///   returning `Result<T, E>`): each worker's answer, or why it gave none (unreachable or
///   died: reported at once; silent: at the deadline).
/// - `CalcServer<T: Calc>`: a `Service` to hand to `procwire_rpc::Server` (or to
///   `procwire_workers::Worker::serve`), or to `procwire_rpc::datagram::serve` for the
///   one-way methods sent as datagrams; `new(implementation)`, and for a trait with
///   `async fn` methods also `with_runner(implementation, runner)`.
/// - `CalcDatagrams`, if the trait has `#[procwire(oneway)]` methods: `unix(path)` or
///   `udp(addr)`, then one method per one-way method, each call sent as one datagram (Unix
///   datagram socket or UDP; best effort, see `procwire_rpc::datagram`), returning
///   `Result<(), DatagramError>`.
///
/// # Methods
///
/// Methods take `&self`, then arguments `name: Type` whose types are `serde` types that
/// implement `Schema`. `&T`,
/// `&[T]`, `&str` and `&[u8]` arguments are borrowed from the caller on the client side; on
/// the server, `&str` and `&[u8]` are lent straight from the received frame, while `&T` and
/// `&[T]` are decoded into an owned `T` or `Vec<T>` and lent from there. `&[u8]` and
/// `Vec<u8>` travel as one byte string; a method whose one argument is a large one (64 KiB
/// or more) gets it in the buffer the server's transport read it into, with no copy (a
/// `Vec<u8>` by value, which it may return as its reply, also without a copy). A
/// method may take `ctx: &CallContext` as its first argument to learn about the call (the
/// caller's pid and uid where the transport knows them, its deadline, whether it was
/// cancelled); clients do not pass it.
///
/// A method may be an `async fn` (the trait's implementation then writes it as one): clients
/// are the same, and the server runs each call's future to completion on the server thread
/// that took the call, on the `Runner` given to `CalcServer::with_runner` (`new` takes the
/// tokio runtime it is called in, with the `tokio` feature, else polls on the thread). So an
/// async method is bounded, cancellable and drained on a graceful stop as a blocking one is.
///
/// Two attributes mark methods:
///
/// - `#[procwire(oneway)]`: the method returns nothing and its caller does not wait for the
///   server to run it. A server runs the requests of one connection concurrently (up to
///   `max_calls_per_connection`), so a call sent after a one-way call may run before it or
///   beside it: a caller that needs the effect first makes the method an ordinary call.
/// - `#[procwire(idempotent)]`: running the method twice does no harm (a read, a lookup, a
///   `set` of a value). `CalcPool` may then try a call again on another worker when the
///   worker it went to died or its connection had gone stale, each worker at most once, so
///   that a crash or a rolling restart costs such a call nothing. A method without it is
///   never run twice by the pool: if its worker dies under it, the caller gets the error
///   (`Delivery::Unknown`) and decides. `CalcClient`, one connection, never retries. The attribute is not part of the
///   method's signature: marking a method idempotent changes only what the pool client does.
///
/// # Compatibility
///
/// Each method's id is a hash of its name, so adding or reordering methods leaves other ids
/// alone. The handshake exchanges each method's signature, made of the structure of its
/// argument and result types (every type that travels implements `Schema`:
/// `#[derive(procwire::Schema)]`) and its `oneway` flag: `fn add(i64, i64) -> i64`. A client
/// connects to any server of the same service name; a call to a method the server lacks, or
/// has with another signature, fails at once with `RpcError::Incompatible` naming the method
/// and both signatures, without being sent. So adding a method to a server never breaks its
/// clients; reordering methods, renaming arguments, editing docs, marking a method
/// idempotent and spelling a type another way (`std::string::String` for `String`, `&str`
/// for `String`) change nothing; changing a type's structure, adding or removing an
/// argument, or making a method one-way makes that method (only) incompatible. The whole
/// rule is in `procwire_rpc::schema`.
///
/// # Where the runtime is found
///
/// The expansion calls `procwire::rpc` if the crate depends on `procwire`, else
/// `procwire_rpc`, under whatever name `Cargo.toml` gives them; `#[service(crate = path)]`
/// names it explicitly.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(input as syn::ItemTrait);
    expand::service(args.into(), &item).into()
}

/// Derives `Schema` (`procwire::rpc::Schema`): the structural description of a struct or an
/// enum that the handshake's method signatures are made of. Every type that crosses the wire
/// in a `#[procwire::service]` method implements it.
///
/// ```
/// use wire::schema_of;
///
/// #[derive(procwire_macros::Schema)]
/// struct Point { x: i64, y: i64 }
///
/// #[derive(procwire_macros::Schema)]
/// enum Shape { Empty, Dot(Point), Line { from: Point, to: Point } }
///
/// assert_eq!(schema_of::<Point>(), "{x: i64, y: i64}");
/// assert_eq!(
///     schema_of::<Shape>(),
///     "enum {Empty, Dot({x: i64, y: i64}), Line {from: {x: i64, y: i64}, to: {x: i64, y: i64}}}"
/// );
/// ```
///
/// Field and variant names and their order are part of the description (they are part of
/// what the encoding means); the type's own name is not, so renaming or moving a type keeps
/// its signatures. Type parameters must implement `Schema`. `#[procwire(crate = path)]`
/// names the runtime crate, as for `#[service]`. See `procwire_rpc::schema` for the whole
/// notation and the compatibility rule.
#[proc_macro_derive(Schema, attributes(procwire))]
pub fn derive_schema(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    schema::derive(&input).into()
}

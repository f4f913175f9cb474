//! Structural type descriptions, and the method signatures the handshake compares.
//!
//! Every type that crosses the wire in a `#[procwire::service]` method implements
//! [`Schema`]: it describes its *structure*, the shape its postcard encoding has, not how
//! its name is spelled. `String`, `std::string::String`, `&str` and `Box<str>` are all
//! `string`; `Vec<T>`, `&[T]` and `VecDeque<T>` are all `[T]`; `Box<T>`, `Arc<T>` and `&T`
//! are `T`. Implementations are given here for the standard types serde supports, and
//! `#[derive(Schema)]` (re-exported as `procwire::Schema`) writes one for a struct or enum.
//!
//! A method's signature is its name, its arguments' and result's descriptions and whether it
//! is one-way, as text ([`signature`]); its fingerprint is a 64-bit FNV-1a hash of that text
//! ([`fingerprint`]). Both are a wire contract: the golden tests at the bottom of this file
//! pin them.
//!
//! # The compatibility rule
//!
//! (Also in the repository's `docs/services.md`, with examples.)
//!
//! Two builds of a service can call a method of each other's when the method has the same
//! name and the same signature on both sides. So, per method:
//!
//! - **compatible**: renaming an argument, editing docs, reordering methods, renaming or
//!   moving a type, writing a type another way (`std::string::String` for `String`,
//!   `&str` for `String` in an argument, a type alias), marking a method idempotent,
//!   taking or dropping the `&CallContext`;
//! - **incompatible**: changing an argument's or the result's structure (`i32` for `i64`,
//!   a field added, removed, renamed or reordered, an enum variant added, removed, renamed
//!   or reordered), adding or removing an argument, making a method one-way or not.
//!
//! Adding a method to a server never affects its existing clients; a client calling a
//! method the server lacks, or has with another signature, gets
//! [`RpcError::Incompatible`](crate::RpcError::Incompatible) at once, without the call
//! being sent.
//!
//! # Descriptions
//!
//! | type                                                   | description            |
//! |--------------------------------------------------------|------------------------|
//! | `bool`, `char`, `i8`..`i128`, `u8`..`u128`, `f32`, `f64` | itself               |
//! | `isize`, `usize` (serde writes them as 64-bit)          | `i64`, `u64`           |
//! | `String`, `str`, `Box<str>`, `Path`, `PathBuf`          | `string`               |
//! | `()`, a unit struct                                    | `()`                   |
//! | `Option<T>`                                            | `option<T>`            |
//! | `Vec<T>`, `[T]`, `VecDeque<T>`, sets, `ByteBuf`, `Bytes` | `[T]` (`[u8]`)       |
//! | `[T; N]`                                               | `[T; N]`               |
//! | tuples, a tuple struct of two or more fields           | `(A, B)`               |
//! | `HashMap<K, V>`, `BTreeMap<K, V>`                      | `map<K, V>`            |
//! | `Result<T, E>`                                         | `result<T, E>`         |
//! | `&T`, `Box<T>`, `Rc<T>`, `Arc<T>`, `Cow<T>`, a newtype struct | `T`             |
//! | a struct with named fields                             | `{a: A, b: B}`         |
//! | an enum                                                | `enum {A, B(T), C {x: X}}` |
//! | a type inside its own description (recursion)          | `^N`, N levels up      |
//!
//! `#[derive(Schema)]` sees the Rust definition only: serde attributes that change the
//! encoding (`skip`, `flatten`, `untagged`, `with`) are not reflected, so a type using them
//! should implement [`Schema`] by hand, describing what travels.

use std::any::type_name;

mod impls;

/// A type's structural description, for the per-method fingerprints the handshake compares.
///
/// Implement it with `#[derive(Schema)]` (re-exported as `procwire::Schema`), or by hand
/// for a type whose serde implementation is written by hand:
///
/// - the description says what the encoding looks like, in the notation of the
///   [module docs](self), so that equal descriptions mean interchangeable encodings;
/// - a named type (a struct or an enum) writes its body inside [`SchemaWriter::named`], which
///   turns a recursive occurrence into a back-reference instead of recursing forever.
///
/// ```
/// use procwire_rpc::{schema_of, Schema, SchemaWriter};
///
/// /// Travels as its text, by a hand-written serde implementation.
/// struct Version(u16, u16);
///
/// impl Schema for Version {
///     fn describe(w: &mut SchemaWriter) {
///         w.item::<String>();
///     }
/// }
///
/// assert_eq!(schema_of::<Version>(), "string");
/// assert_eq!(schema_of::<Vec<Version>>(), "[string]");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not describe its structure for procwire's handshake",
    label = "no `Schema` for this type",
    note = "add `#[derive(procwire::Schema)]` to its definition, or implement `Schema` by hand"
)]
pub trait Schema {
    /// Writes this type's description.
    fn describe(w: &mut SchemaWriter);
}

/// Where a [`Schema`] writes its description.
#[derive(Debug, Default)]
pub struct SchemaWriter {
    out: String,
    /// The named types being described, outermost first, to catch recursion.
    named: Vec<&'static str>,
}

impl SchemaWriter {
    /// An empty description.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends literal text.
    pub fn write(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Appends the description of `T`.
    pub fn item<T: Schema + ?Sized>(&mut self) {
        T::describe(self)
    }

    /// Appends the description of named type `T`, written by `body`; if `T` is already being
    /// described further out (a recursive type), appends `^N` instead, `N` being how many
    /// named types up it is.
    pub fn named<T: ?Sized>(&mut self, body: impl FnOnce(&mut Self)) {
        let name = type_name::<T>();
        if let Some(at) = self.named.iter().rposition(|n| *n == name) {
            let up = self.named.len() - at;
            self.out.push_str(&format!("^{up}"));
            return;
        }
        self.named.push(name);
        body(self);
        self.named.pop();
    }

    /// Appends `open`, the descriptions written by each of `items` separated by `, `, then
    /// `close`.
    pub fn list(&mut self, open: &str, items: &[fn(&mut SchemaWriter)], close: &str) {
        self.write(open);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.write(", ");
            }
            item(self);
        }
        self.write(close);
    }

    /// The description written.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The description of `T`.
pub fn schema_of<T: Schema + ?Sized>() -> String {
    let mut w = SchemaWriter::new();
    w.item::<T>();
    w.finish()
}

/// A function that writes one type's description: `<T as Schema>::describe`.
pub type Describe = fn(&mut SchemaWriter);

/// The signature of method `name`: `fn add(i64, i64) -> i64`, or for a one-way method
/// `oneway fn log(string)`, from the descriptions of its arguments (as they travel) and of
/// its result.
pub fn signature(name: &str, oneway: bool, args: &[Describe], result: Describe) -> String {
    let mut w = SchemaWriter::new();
    if oneway {
        w.write("oneway ");
    }
    w.write("fn ");
    w.write(name);
    w.list("(", args, ")");
    if !oneway {
        w.write(" -> ");
        result(&mut w);
    }
    w.finish()
}

/// The fingerprint of a signature: its 64-bit FNV-1a hash, stable across builds, platforms
/// and Rust versions (which `std`'s hashers do not promise).
pub fn fingerprint(signature: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in signature.as_bytes() {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests;

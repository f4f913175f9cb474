//! [`Schema`] for the standard types serde supports, described as serde encodes them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use super::{Schema, SchemaWriter};

/// Types described by a fixed text.
macro_rules! fixed {
    ($($ty:ty => $text:literal),* $(,)?) => {
        $(impl Schema for $ty {
            fn describe(w: &mut SchemaWriter) {
                w.write($text);
            }
        })*
    };
}

fixed! {
    bool => "bool", char => "char",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128",
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128",
    // serde writes the pointer-sized integers as 64-bit ones.
    isize => "i64", usize => "u64",
    f32 => "f32", f64 => "f64",
    () => "()",
    str => "string", String => "string",
    std::path::Path => "string", std::path::PathBuf => "string",
    std::ffi::OsStr => "enum {Unix([u8]), Windows([u16])}",
    std::ffi::OsString => "enum {Unix([u8]), Windows([u16])}",
    serde_bytes::Bytes => "[u8]", serde_bytes::ByteBuf => "[u8]",
    std::time::Duration => "{secs: u64, nanos: u32}",
    std::time::SystemTime => "{secs_since_epoch: u64, nanos_since_epoch: u32}",
    std::net::Ipv4Addr => "[u8; 4]", std::net::Ipv6Addr => "[u8; 16]",
    std::net::IpAddr => "enum {V4([u8; 4]), V6([u8; 16])}",
    std::net::SocketAddrV4 => "([u8; 4], u16)",
    std::net::SocketAddrV6 => "([u8; 16], u16)",
    std::net::SocketAddr => "enum {V4(([u8; 4], u16)), V6(([u8; 16], u16))}",
}

/// Pointers and wrappers that serde encodes as what they hold.
macro_rules! transparent {
    ($($ty:ident),*) => {
        $(impl<T: Schema + ?Sized> Schema for $ty<T> {
            fn describe(w: &mut SchemaWriter) {
                T::describe(w)
            }
        })*
    };
}

transparent!(Box, Rc, Arc);

impl<T: Schema + ?Sized> Schema for &T {
    fn describe(w: &mut SchemaWriter) {
        T::describe(w)
    }
}

impl<T: Schema + ?Sized> Schema for &mut T {
    fn describe(w: &mut SchemaWriter) {
        T::describe(w)
    }
}

impl<T: Schema + ToOwned + ?Sized> Schema for Cow<'_, T> {
    fn describe(w: &mut SchemaWriter) {
        T::describe(w)
    }
}

impl<T: Schema> Schema for std::num::Wrapping<T> {
    fn describe(w: &mut SchemaWriter) {
        T::describe(w)
    }
}

/// Sequences: a length, then the elements.
macro_rules! seq {
    ($($ty:ident),*) => {
        $(impl<T: Schema> Schema for $ty<T> {
            fn describe(w: &mut SchemaWriter) {
                w.list("[", &[T::describe], "]");
            }
        })*
    };
}

seq!(Vec, VecDeque, LinkedList, BinaryHeap, BTreeSet);

impl<T: Schema> Schema for [T] {
    fn describe(w: &mut SchemaWriter) {
        w.list("[", &[T::describe], "]");
    }
}

impl<T: Schema, S> Schema for HashSet<T, S> {
    fn describe(w: &mut SchemaWriter) {
        w.list("[", &[T::describe], "]");
    }
}

impl<T: Schema, const N: usize> Schema for [T; N] {
    fn describe(w: &mut SchemaWriter) {
        w.write("[");
        w.item::<T>();
        w.write(&format!("; {N}]"));
    }
}

impl<K: Schema, V: Schema> Schema for BTreeMap<K, V> {
    fn describe(w: &mut SchemaWriter) {
        w.list("map<", &[K::describe, V::describe], ">");
    }
}

impl<K: Schema, V: Schema, S> Schema for HashMap<K, V, S> {
    fn describe(w: &mut SchemaWriter) {
        w.list("map<", &[K::describe, V::describe], ">");
    }
}

impl<T: Schema> Schema for Option<T> {
    fn describe(w: &mut SchemaWriter) {
        w.list("option<", &[T::describe], ">");
    }
}

impl<T: Schema, E: Schema> Schema for Result<T, E> {
    fn describe(w: &mut SchemaWriter) {
        w.list("result<", &[T::describe, E::describe], ">");
    }
}

/// Tuples of one to twelve elements.
macro_rules! tuples {
    ($(($($t:ident),+)),* $(,)?) => {
        $(impl<$($t: Schema),+> Schema for ($($t,)+) {
            fn describe(w: &mut SchemaWriter) {
                w.list("(", &[$($t::describe),+], ")");
            }
        })*
    };
}

tuples! {
    (A), (A, B), (A, B, C), (A, B, C, D), (A, B, C, D, E), (A, B, C, D, E, F),
    (A, B, C, D, E, F, G), (A, B, C, D, E, F, G, H), (A, B, C, D, E, F, G, H, I),
    (A, B, C, D, E, F, G, H, I, J), (A, B, C, D, E, F, G, H, I, J, K),
    (A, B, C, D, E, F, G, H, I, J, K, L),
}

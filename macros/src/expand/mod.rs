//! Generates the service's items, one function per item.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::{Ident, ItemTrait, TraitItem};

use crate::ast::{self, Ctxt, Method, Output, Service, Wire};
use crate::valid;

mod async_client;
mod client;
mod pool;
mod server;
mod types;

use async_client::{async_client, async_pool};
use client::{client, copies, deadlines, starter, starter_type};
use pool::{constructors, pool};
use server::server;
pub(crate) use types::wire_bounds;
use types::{info, type_checks};

/// The whole expansion: the trait, and on success the generated items; on failure the trait
/// and every error.
pub fn service(args: TokenStream, item: &ItemTrait) -> TokenStream {
    let cx = Ctxt::default();
    let rt = runtime(&cx, args);
    let model = ast::parse(item);
    valid::check(&cx, &model);
    let trait_item = trait_item(item);
    if let Err(errors) = cx.check() {
        // Keep the trait so that its users do not drown the real errors in unresolved names.
        let errors = errors.into_compile_error();
        return quote!(#trait_item #errors);
    }
    let names = Names::new(item);
    let client = client(&rt, &names, &model);
    let async_client = async_client(&rt, &names, &model);
    let starter = starter(&rt, &names, &model);
    let server = server(&rt, &names, &model);
    let pool = pool(&rt, &names, &model);
    let async_pool = async_pool(&rt, &names, &model);
    let all = crate::all::all(&rt, &names, &model);
    let datagrams = crate::datagram::datagrams(&rt, &names, &model);
    let checks = type_checks(&rt, &model);
    quote! {
        #trait_item
        #client
        #async_client
        #starter
        #server
        #pool
        #async_pool
        #all
        #datagrams
        #checks
    }
}

/// Names of the generated items.
pub(crate) struct Names {
    pub(crate) vis: syn::Visibility,
    pub(crate) service: Ident,
    pub(crate) client: Ident,
    starter: Ident,
    server: Ident,
    service_name: String,
}

impl Names {
    fn new(item: &ItemTrait) -> Self {
        let service = item.ident.clone();
        Names {
            vis: item.vis.clone(),
            client: format_ident!("{}Client", service),
            starter: format_ident!("{}Start", service),
            server: format_ident!("{}Server", service),
            service_name: service.to_string(),
            service,
        }
    }
}

/// The method id on the wire: a hash of the name, so that adding or reordering methods
/// leaves the others' ids alone.
pub fn method_id(name: &str) -> u32 {
    let hash = fnv1a_64(name.as_bytes());
    (hash ^ (hash >> 32)) as u32
}

/// 64-bit FNV-1a: stable across builds, platforms and Rust versions, which `std`'s hashers
/// do not promise (the same hash as `procwire_rpc::schema::fingerprint`).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The path of the runtime (`procwire::rpc` or `procwire_rpc`, under its name here).
pub(crate) fn runtime(cx: &Ctxt, args: TokenStream) -> TokenStream {
    if !args.is_empty() {
        let parser = |input: syn::parse::ParseStream<'_>| -> syn::Result<syn::Path> {
            input.parse::<syn::Token![crate]>()?;
            input.parse::<syn::Token![=]>()?;
            let path: syn::Path = input.parse()?;
            Ok(path)
        };
        match syn::parse::Parser::parse2(parser, args) {
            Ok(path) => return path.to_token_stream(),
            Err(e) => cx.syn_error(syn::Error::new(
                e.span(),
                "expected `crate = path::to::procwire_rpc` or nothing",
            )),
        }
    }
    use proc_macro_crate::{crate_name, FoundCrate};
    let ident = |name: &str| Ident::new(&name.replace('-', "_"), Span::call_site());
    match crate_name("procwire") {
        Ok(FoundCrate::Itself) => quote!(::procwire::rpc),
        Ok(FoundCrate::Name(name)) => {
            let name = ident(&name);
            quote!(::#name::rpc)
        }
        Err(_) => match crate_name("procwire-rpc") {
            Ok(FoundCrate::Name(name)) => {
                let name = ident(&name);
                quote!(::#name)
            }
            _ => quote!(::procwire_rpc),
        },
    }
}

/// The trait, minus the `#[procwire(...)]` attributes only this macro reads. With `async fn`
/// methods it allows `async_fn_in_trait`: the futures need not be `Send`, since the server
/// runs each on the thread that took the call.
fn trait_item(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
    let has_async = item
        .items
        .iter()
        .any(|i| matches!(i, TraitItem::Fn(f) if f.sig.asyncness.is_some()));
    if has_async {
        item.attrs.push(syn::parse_quote!(#[allow(async_fn_in_trait)]));
    }
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("procwire"));
        }
    }
    item.into_token_stream()
}

/// The method's attributes that the generated client methods carry too: docs, lint levels,
/// `deprecated`, and conditional compilation.
pub(crate) fn docs<'a>(method: &Method<'a>) -> Vec<&'a syn::Attribute> {
    const CARRIED: &[&str] = &[
        "doc",
        "cfg",
        "cfg_attr",
        "allow",
        "expect",
        "warn",
        "deny",
        "deprecated",
    ];
    method
        .item
        .attrs
        .iter()
        .filter(|a| CARRIED.iter().any(|name| a.path().is_ident(name)))
        .collect()
}

/// The method's `cfg` attributes, for the dispatch arms that name it.
fn cfgs<'a>(method: &Method<'a>) -> Vec<&'a syn::Attribute> {
    method.item.attrs.iter().filter(|a| a.path().is_ident("cfg")).collect()
}

/// The client's parameters, and the tuple expression that carries them. `by_ref` borrows
/// the arguments, so that the tuple can be sent more than once (a pool client's retry).
pub(crate) fn client_args(rt: &TokenStream, method: &Method<'_>, by_ref: bool) -> (Vec<TokenStream>, TokenStream) {
    let mut params = Vec::new();
    let mut values = Vec::new();
    for arg in &method.args {
        let name = arg.name.expect("validated");
        let ty = arg.ty;
        params.push(quote!(#name: #ty));
        values.push(match arg.wire {
            Wire::Owned if by_ref => quote!(&#name),
            Wire::Owned | Wire::Borrowed(_) | Wire::Slice(_) | Wire::Str => quote!(#name),
            Wire::ByteSlice => quote!(#rt::__private::serde_bytes::Bytes::new(#name)),
            Wire::ByteVec => quote!(#rt::__private::serde_bytes::Bytes::new(&#name)),
        });
    }
    (params, quote!((#(#values,)*)))
}

/// The client method's return type, and its body from `call` (which returns the reply as
/// it travels): a `Vec<u8>` arrives as a byte buffer, a `Result<T, E>` splits into the
/// value and a typed `CallError`.
fn typed_reply(
    rt: &TokenStream,
    output: &Output<'_>,
    wire: &TokenStream,
    call: TokenStream,
) -> (TokenStream, TokenStream) {
    match output {
        Output::Unit | Output::Value(_) => (quote!(::core::result::Result<#wire, #rt::RpcError>), call),
        Output::ByteVec => (
            quote!(::core::result::Result<::std::vec::Vec<u8>, #rt::RpcError>),
            quote!(#call.map(#rt::__private::serde_bytes::ByteBuf::into_vec)),
        ),
        Output::Result { ok, err } => (
            quote!(::core::result::Result<#ok, #rt::CallError<#err>>),
            quote!(#call?.map_err(#rt::CallError::Application)),
        ),
    }
}

/// The type the reply travels as.
pub(crate) fn reply_type(rt: &TokenStream, output: &Output<'_>) -> TokenStream {
    match output {
        Output::Unit => quote!(()),
        Output::Value(ty) => quote!(#ty),
        Output::ByteVec => quote!(#rt::__private::serde_bytes::ByteBuf),
        Output::Result { ok, err } => quote!(::core::result::Result<#ok, #err>),
    }
}

/// What every generated client method starts from: its name, the attributes it carries,
/// its parameters, the tuple that carries them, its `METHOD` constant and its serde bounds.
struct Parts<'a> {
    name: &'a Ident,
    docs: Vec<&'a syn::Attribute>,
    params: Vec<TokenStream>,
    args: TokenStream,
    constant: TokenStream,
    bounds: Vec<TokenStream>,
}

impl<'a> Parts<'a> {
    /// `by_ref` as for [`client_args`].
    fn of(rt: &TokenStream, method: &Method<'a>, by_ref: bool) -> Self {
        let (params, args) = client_args(rt, method, by_ref);
        Parts {
            name: method.name,
            docs: docs(method),
            params,
            args,
            constant: method_const(rt, method),
            bounds: wire_bounds(rt, method),
        }
    }
}

pub(crate) fn method_const(rt: &TokenStream, method: &Method<'_>) -> TokenStream {
    let id = method_id(&method.name.to_string());
    let name = method.name.to_string();
    quote!(const METHOD: #rt::Method = #rt::Method::new(#id, #name);)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ids are a wire contract between builds: these values must never change.
    #[test]
    fn method_ids_are_stable_across_releases() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(method_id("add"), 0xe23b_254d);
    }
}

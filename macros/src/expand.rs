//! Generates the service's items, one function per item.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, ItemTrait, TraitItem};

use crate::ast::{self, Ctxt, Method, Output, Service, Wire};
use crate::valid;

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
    let starter = starter(&rt, &names, &model);
    let server = server(&rt, &names, &model);
    let pool = pool(&rt, &names, &model);
    let all = crate::all::all(&rt, &names, &model);
    let datagrams = crate::datagram::datagrams(&rt, &names, &model);
    let checks = type_checks(&rt, &model);
    quote! {
        #trait_item
        #client
        #starter
        #server
        #pool
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
    fingerprint: u64,
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
            fingerprint: fingerprint(item),
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
/// do not promise.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The schema fingerprint: the service name and every method's name, argument types,
/// return type and oneway flag, in name order, as written.
fn fingerprint(item: &ItemTrait) -> u64 {
    let mut methods: Vec<String> = item
        .items
        .iter()
        .filter_map(|i| match i {
            TraitItem::Fn(f) => {
                let sig = &f.sig;
                let args: Vec<String> = sig
                    .inputs
                    .iter()
                    .filter_map(|a| match a {
                        // The context never travels: taking it or not is no change of interface.
                        syn::FnArg::Typed(t) if ast::is_call_context(&t.ty) => None,
                        syn::FnArg::Typed(t) => Some(t.ty.to_token_stream().to_string()),
                        syn::FnArg::Receiver(_) => None,
                    })
                    .collect();
                let ret = match &sig.output {
                    syn::ReturnType::Default => "()".to_owned(),
                    syn::ReturnType::Type(_, t) => t.to_token_stream().to_string(),
                };
                let oneway = f
                    .attrs
                    .iter()
                    .any(|a| a.path().is_ident("procwire") && a.to_token_stream().to_string().contains("oneway"));
                Some(format!(
                    "{}({})->{}{}",
                    sig.ident,
                    args.join(","),
                    ret,
                    if oneway { " oneway" } else { "" }
                ))
            }
            _ => None,
        })
        .collect();
    methods.sort();
    fnv1a_64(format!("procwire-service:{};{}", item.ident, methods.join(";")).as_bytes())
}

/// The path of the runtime (`procwire::rpc` or `procwire_rpc`, under its name here).
fn runtime(cx: &Ctxt, args: TokenStream) -> TokenStream {
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

/// The trait, minus the `#[procwire(...)]` attributes only this macro reads.
fn trait_item(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
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

pub(crate) fn method_const(rt: &TokenStream, method: &Method<'_>) -> TokenStream {
    let id = method_id(&method.name.to_string());
    let name = method.name.to_string();
    quote!(const METHOD: #rt::Method = #rt::Method::new(#id, #name);)
}

fn client(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis,
        service,
        client,
        starter,
        service_name,
        fingerprint,
        ..
    } = names;
    let client_doc = format!(
        "A typed client for the [`{service}`] service: one connection, shareable by any number of threads (clone it)."
    );
    let methods = model.methods.iter().map(|method| {
        let name = method.name;
        let docs = docs(method);
        let (params, args) = client_args(rt, method, false);
        let constant = method_const(rt, method);
        let bounds = wire_bounds(rt, method);
        if method.oneway {
            return quote! {
                #(#docs)*
                #[doc = ""]
                #[doc = "One-way: returns once the call is sent; no reply is awaited."]
                pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::RpcError>
                where #(#bounds),*
                {
                    #constant
                    self.client.notify(METHOD, &#args, #rt::Wait::deadline(self.__procwire_deadline()))
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        let call = quote!(self.client.call::<_, #wire>(METHOD, &#args, self.__procwire_deadline()));
        let (ret, body) = typed_reply(rt, &method.output, &wire, call);
        quote! {
            #(#docs)*
            pub fn #name(&self, #(#params),*) -> #ret
            where #(#bounds),*
            {
                #constant
                #body
            }
        }
    });
    let deadlines = deadlines(rt, &format_ident!("client"), starter, "connection");
    quote! {
        #[doc = #client_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: #rt::Client,
            deadline: ::core::option::Option<::std::time::Instant>,
            timeout: ::core::option::Option<::std::time::Duration>,
        }

        // The higher-ranked serde bounds name a lifetime only to defer their check.
        #[allow(unused_lifetimes)]
        impl #client {
            /// The service name the handshake checks.
            pub const SERVICE: &'static str = #service_name;
            /// The schema fingerprint the handshake checks.
            pub const FINGERPRINT: u64 = #fingerprint;

            /// The service's name and fingerprint.
            pub fn info() -> #rt::ServiceInfo {
                #rt::ServiceInfo::new(Self::SERVICE, Self::FINGERPRINT)
            }

            /// Connects over `transport`, checking in the handshake that the server serves
            /// this very interface.
            pub fn connect(transport: #rt::transport::Transport) -> ::core::result::Result<Self, #rt::RpcError> {
                ::core::result::Result::Ok(Self::from_client(#rt::Client::connect(transport, Self::info())?))
            }

            /// Connects with `config`.
            pub fn connect_with(
                transport: #rt::transport::Transport,
                config: #rt::ClientConfig,
            ) -> ::core::result::Result<Self, #rt::RpcError> {
                ::core::result::Result::Ok(Self::from_client(#rt::Client::connect_with(transport, Self::info(), config)?))
            }

            /// Wraps a connected untyped client.
            pub fn from_client(client: #rt::Client) -> Self {
                Self { client, deadline: ::core::option::Option::None, timeout: ::core::option::Option::None }
            }

            /// The untyped client underneath.
            pub fn client(&self) -> &#rt::Client {
                &self.client
            }

            #deadlines

            #(#methods)*
        }
    }
}

/// `with_deadline`, `with_timeout`, `start` and `try_start` of a client or a pool client
/// whose connection (or connections) is in `field`, and whose starter type is `starter`.
fn deadlines(rt: &TokenStream, field: &Ident, starter: &Ident, connections: &str) -> TokenStream {
    let deadline_doc = format!(" A copy of this client (same {connections}) whose calls must finish by `deadline`.");
    let timeout_doc = format!(
        " A copy of this client (same {connections}) whose calls each must finish within `timeout` of starting."
    );
    quote! {
        #[doc = #deadline_doc]
        pub fn with_deadline(&self, deadline: ::std::time::Instant) -> Self {
            Self { #field: ::core::clone::Clone::clone(&self.#field), deadline: ::core::option::Option::Some(deadline), timeout: ::core::option::Option::None }
        }

        #[doc = #timeout_doc]
        pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
            Self { #field: ::core::clone::Clone::clone(&self.#field), deadline: ::core::option::Option::None, timeout: ::core::option::Option::Some(timeout) }
        }

        /// Calls that return at once with a `PendingCall` to wait on, poll or drop;
        /// sending waits for room in the outgoing queue.
        pub fn start(&self) -> #starter<'_> {
            #starter { #field: self, wait: #rt::Wait::deadline(self.__procwire_deadline()) }
        }

        /// Like [`start`](Self::start), but sending fails with `WouldBlock` instead of
        /// waiting for room.
        pub fn try_start(&self) -> #starter<'_> {
            #starter { #field: self, wait: #rt::Wait::NonBlock }
        }

        fn __procwire_deadline(&self) -> ::core::option::Option<::std::time::Instant> {
            #rt::__private::deadline(self.deadline, self.timeout)
        }
    }
}

fn starter(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis,
        service,
        client,
        starter,
        ..
    } = names;
    let doc = format!("Calls of [`{service}`] that return before their reply: see [`{client}::start`].");
    let methods = model.methods.iter().map(|method| {
        let name = method.name;
        let docs = docs(method);
        let (params, args) = client_args(rt, method, false);
        let constant = method_const(rt, method);
        let bounds = wire_bounds(rt, method);
        if method.oneway {
            return quote! {
                #(#docs)*
                pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::RpcError>
                where #(#bounds),*
                {
                    #constant
                    self.client.client.notify(METHOD, &#args, self.wait)
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        quote! {
            #(#docs)*
            pub fn #name(&self, #(#params),*) -> ::core::result::Result<#rt::PendingCall<#wire>, #rt::RpcError>
            where #(#bounds),*
            {
                #constant
                let __procwire_deadline = self.client.__procwire_deadline();
                match self.wait {
                    #rt::Wait::NonBlock => self.client.client.try_start(METHOD, &#args, __procwire_deadline),
                    _ => self.client.client.start(METHOD, &#args, __procwire_deadline),
                }
            }
        }
    });
    starter_type(rt, vis, starter, &format_ident!("client"), client, &doc, methods)
}

/// A starter type: a borrowed client (or pool client) in `field`, and how a send may wait.
fn starter_type(
    rt: &TokenStream,
    vis: &syn::Visibility,
    starter: &Ident,
    field: &Ident,
    target: &Ident,
    doc: &str,
    methods: impl Iterator<Item = TokenStream>,
) -> TokenStream {
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #starter<'a> {
            #field: &'a #target,
            wait: #rt::Wait,
        }

        #[allow(unused_lifetimes)]
        impl #starter<'_> {
            #(#methods)*
        }
    }
}

fn server(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis,
        service,
        client,
        server,
        service_name,
        ..
    } = names;
    let doc = format!("Serves any implementation of [`{service}`]: hand it to `Server::new`.");
    let server_bounds: Vec<TokenStream> = model.methods.iter().flat_map(|m| wire_bounds(rt, m)).collect();
    let names_arms = model.methods.iter().map(|m| {
        let id = method_id(&m.name.to_string());
        let name = m.name.to_string();
        let cfgs = cfgs(m);
        quote!(#(#cfgs)* #id => ::core::option::Option::Some(#name),)
    });
    let call_arms = model.methods.iter().map(|method| {
        let id = method_id(&method.name.to_string());
        let name = method.name;
        let mut vars = Vec::new();
        let mut types = Vec::new();
        let mut passed = Vec::new();
        for (i, arg) in method.args.iter().enumerate() {
            let var = format_ident!("__arg{}", i);
            let ty = arg.ty;
            let (wire, pass) = match arg.wire {
                Wire::Owned => (quote!(#ty), quote!(#var)),
                Wire::Borrowed(inner) => (quote!(#inner), quote!(&#var)),
                Wire::Slice(elem) => (quote!(::std::vec::Vec<#elem>), quote!(::core::ops::Deref::deref(&#var))),
                Wire::Str => (quote!(&str), quote!(#var)),
                Wire::ByteSlice => (
                    quote!(&#rt::__private::serde_bytes::Bytes),
                    quote!(::core::ops::Deref::deref(#var)),
                ),
                Wire::ByteVec => (quote!(#rt::__private::serde_bytes::ByteBuf), quote!(#var.into_vec())),
            };
            vars.push(var);
            types.push(wire);
            passed.push(pass);
        }
        let ctx_arg = method.context.map(|_| quote!(ctx,));
        let invoke = quote!(<__T as #service>::#name(&self.inner, #ctx_arg #(#passed),*));
        let reply = match &method.output {
            Output::ByteVec => quote!(ctx.reply(&#rt::__private::serde_bytes::Bytes::new(&#invoke))),
            _ => quote!(ctx.reply(&#invoke)),
        };
        let cfgs = cfgs(method);
        quote! {
            #(#cfgs)*
            #id => {
                let (#(#vars,)*): (#(#types,)*) = #rt::decode_args(ctx, args)?;
                #reply
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #server<__T> {
            inner: __T,
        }

        impl<__T> #server<__T> {
            /// Wraps an implementation.
            pub fn new(inner: __T) -> Self {
                Self { inner }
            }

            /// The implementation.
            pub fn get_ref(&self) -> &__T {
                &self.inner
            }

            /// Unwraps the implementation.
            pub fn into_inner(self) -> __T {
                self.inner
            }
        }

        #[allow(unused_lifetimes)]
        impl<__T: #service + ::core::marker::Send + ::core::marker::Sync + 'static> #rt::Service for #server<__T>
        where #(#server_bounds),*
        {
            fn info(&self) -> #rt::ServiceInfo {
                #client::info()
            }

            fn method_name(&self, id: u32) -> ::core::option::Option<&'static str> {
                match id {
                    #(#names_arms)*
                    _ => ::core::option::Option::None,
                }
            }

            #[allow(deprecated)]
            fn call(
                &self,
                ctx: &#rt::CallContext,
                args: &[u8],
            ) -> ::core::result::Result<#rt::Frame, #rt::Fault> {
                match ctx.method() {
                    #(#call_arms)*
                    id => ::core::result::Result::Err(#rt::Fault::new(
                        #rt::FaultKind::UnknownMethod,
                        ::std::format!("service `{}` has no method with id {}", #service_name, id),
                    )),
                }
            }
        }
    }
}

fn pool(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis, service, client, ..
    } = names;
    let pool = format_ident!("{}Pool", service);
    let starter = format_ident!("{}PoolStart", service);
    let doc = format!(
        "A client for a whole pool of [`{service}`] workers, one endpoint each: each call goes to the \
         worker with the fewest calls outstanding, and a worker that hangs or does not answer is skipped. \
         Every call has a deadline (the configuration's call timeout unless set with `with_timeout` or \
         `with_deadline`). A call on a worker that stops or dies fails naming it; a call that did not run, \
         and one of a method marked `#[procwire(idempotent)]`, is tried on another worker, each at most once. \
         Cheap to clone: clones share the connections."
    );
    let starter_doc =
        format!("Calls of [`{service}`] on a pool that return before their reply: see [`{pool}::start`].");
    let methods = model.methods.iter().map(|method| {
        let name = method.name;
        let method_name = name.to_string();
        let docs = docs(method);
        let (params, args) = client_args(rt, method, true);
        let constant = method_const(rt, method);
        let bounds = wire_bounds(rt, method);
        let idempotent = method.idempotent;
        if method.oneway {
            return quote! {
                #(#docs)*
                pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::RpcError>
                where #(#bounds),*
                {
                    #constant
                    self.pool.notify(#method_name, #idempotent, self.__procwire_deadline(), |__procwire_client, __procwire_deadline| {
                        __procwire_client.notify(METHOD, &#args, #rt::Wait::deadline(__procwire_deadline))
                    })
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        let call = quote!(self.pool.call(#method_name, #idempotent, self.__procwire_deadline(), |__procwire_client, __procwire_deadline| {
            __procwire_client.call::<_, #wire>(METHOD, &#args, __procwire_deadline)
        }));
        let (ret, body) = typed_reply(rt, &method.output, &wire, call);
        quote! {
            #(#docs)*
            pub fn #name(&self, #(#params),*) -> #ret
            where #(#bounds),*
            {
                #constant
                #body
            }
        }
    });
    let start_methods = model.methods.iter().map(|method| {
        let name = method.name;
        let method_name = name.to_string();
        let docs = docs(method);
        let (params, args) = client_args(rt, method, true);
        let constant = method_const(rt, method);
        let bounds = wire_bounds(rt, method);
        if method.oneway {
            let idempotent = method.idempotent;
            return quote! {
                #(#docs)*
                pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::RpcError>
                where #(#bounds),*
                {
                    #constant
                    let __procwire_wait = self.wait;
                    self.pool.pool.notify(#method_name, #idempotent, self.pool.__procwire_deadline(), |__procwire_client, __procwire_deadline| {
                        let __procwire_wait = match __procwire_wait {
                            #rt::Wait::NonBlock => #rt::Wait::NonBlock,
                            _ => #rt::Wait::deadline(__procwire_deadline),
                        };
                        __procwire_client.notify(METHOD, &#args, __procwire_wait)
                    })
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        quote! {
            #(#docs)*
            pub fn #name(&self, #(#params),*) -> ::core::result::Result<#rt::PendingCall<#wire>, #rt::RpcError>
            where #(#bounds),*
            {
                #constant
                let __procwire_wait = self.wait;
                self.pool.pool.start(#method_name, self.pool.__procwire_deadline(), |__procwire_client, __procwire_deadline| {
                    match __procwire_wait {
                        #rt::Wait::NonBlock => __procwire_client.try_start(METHOD, &#args, __procwire_deadline),
                        _ => __procwire_client.start(METHOD, &#args, __procwire_deadline),
                    }
                })
            }
        }
    });
    let deadlines = deadlines(rt, &format_ident!("pool"), &starter, "connections");
    let starter_type = starter_type(
        rt,
        vis,
        &starter,
        &format_ident!("pool"),
        &pool,
        &starter_doc,
        start_methods,
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #pool {
            pool: #rt::pool::Pool,
            deadline: ::core::option::Option<::std::time::Instant>,
            timeout: ::core::option::Option<::std::time::Duration>,
        }

        #[allow(unused_lifetimes)]
        impl #pool {
            /// A pool of the workers at `endpoints` (one per worker: `Endpoint`s, or their text,
            /// `unix:PATH` or `tcp:HOST:PORT`), with the pool defaults
            /// (`ClientConfig::for_pool`); connections are made on first use.
            pub fn new(endpoints: impl ::core::iter::IntoIterator<Item = impl #rt::ToEndpoint>) -> Self {
                Self::with_config(endpoints, #rt::ClientConfig::for_pool())
            }

            /// [`new`](Self::new) with a client configuration for each connection; its
            /// `call_timeout` bounds calls given no deadline.
            pub fn with_config(
                endpoints: impl ::core::iter::IntoIterator<Item = impl #rt::ToEndpoint>,
                config: #rt::ClientConfig,
            ) -> Self {
                Self {
                    pool: #rt::pool::Pool::new(#client::info(), endpoints, config),
                    deadline: ::core::option::Option::None,
                    timeout: ::core::option::Option::None,
                }
            }

            /// The untyped pool underneath.
            pub fn pool(&self) -> &#rt::pool::Pool {
                &self.pool
            }

            #deadlines

            #(#methods)*
        }

        #starter_type
    }
}

/// Where-clause predicates that every type crossing the wire is a serde type, spanned to
/// the user's type. Higher-ranked, so that a type missing the derive does not make the
/// definition itself an error: the spanned checks in `type_checks` report it once, at the
/// type, instead of every generated call reporting it at the attribute.
pub(crate) fn wire_bounds(rt: &TokenStream, method: &Method<'_>) -> Vec<TokenStream> {
    wire_types(method)
        .into_iter()
        .map(|ty| {
            quote_spanned!(ty.span()=> for<'__procwire> #ty: #rt::__private::serde::Serialize + #rt::__private::serde::de::DeserializeOwned)
        })
        .collect()
}

/// The user's types that travel, as written (owned forms of borrowed arguments).
fn wire_types<'a>(method: &Method<'a>) -> Vec<&'a syn::Type> {
    let mut types = Vec::new();
    for arg in &method.args {
        match arg.wire {
            Wire::Owned => types.push(arg.ty),
            Wire::Borrowed(inner) | Wire::Slice(inner) => types.push(inner),
            Wire::Str | Wire::ByteSlice | Wire::ByteVec => {}
        }
    }
    match &method.output {
        Output::Value(ty) => types.push(ty),
        Output::Result { ok, err } => types.extend([*ok, *err]),
        Output::Unit | Output::ByteVec => {}
    }
    types
}

/// Checks, spanned to the user's types, that every argument and return type is a serde
/// type, so that a missing derive is reported where the type is written.
fn type_checks(rt: &TokenStream, model: &Service<'_>) -> TokenStream {
    let checks = model
        .methods
        .iter()
        .flat_map(wire_types)
        .map(|ty| quote_spanned!(ty.span()=> #rt::__private::assert_wire::<#ty>();));
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __procwire_type_checks() {
                #(#checks)*
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ids and fingerprints are a wire contract between builds: these values must never change.
    #[test]
    fn method_ids_are_stable_across_releases() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(method_id("add"), 0xe23b_254d);
    }

    #[test]
    fn the_fingerprint_ignores_order_argument_names_and_docs_but_not_types() {
        let a: ItemTrait = syn::parse_quote! {
            trait Calc {
                fn add(&self, a: i64, b: i64) -> i64;
                #[procwire(oneway)]
                fn log(&self, line: String);
            }
        };
        let reordered: ItemTrait = syn::parse_quote! {
            trait Calc {
                /// Logs.
                #[procwire(oneway)]
                fn log(&self, text: String);
                fn add(&self, x: i64, y: i64) -> i64;
            }
        };
        let retyped: ItemTrait = syn::parse_quote! {
            trait Calc {
                fn add(&self, a: i32, b: i64) -> i64;
                #[procwire(oneway)]
                fn log(&self, line: String);
            }
        };
        let not_oneway: ItemTrait = syn::parse_quote! {
            trait Calc {
                fn add(&self, a: i64, b: i64) -> i64;
                fn log(&self, line: String);
            }
        };
        let renamed_service: ItemTrait = syn::parse_quote! {
            trait Calculator {
                fn add(&self, a: i64, b: i64) -> i64;
                #[procwire(oneway)]
                fn log(&self, line: String);
            }
        };
        assert_eq!(fingerprint(&a), fingerprint(&reordered));
        for other in [&retyped, &not_oneway, &renamed_service] {
            assert_ne!(fingerprint(&a), fingerprint(other));
        }
    }

    #[test]
    fn taking_the_call_context_does_not_change_the_fingerprint() {
        let without: ItemTrait = syn::parse_quote! {
            trait Calc { fn add(&self, a: i64) -> i64; }
        };
        let with: ItemTrait = syn::parse_quote! {
            trait Calc { fn add(&self, ctx: &procwire::rpc::CallContext, a: i64) -> i64; }
        };
        assert_eq!(fingerprint(&without), fingerprint(&with));
    }
}

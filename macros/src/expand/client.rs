//! The single-connection client and its starter: one method per trait method.

use super::*;

pub(super) fn client(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis,
        service,
        client,
        starter,
        service_name,
        ..
    } = names;
    let info = info(rt, model);
    let client_doc = format!(
        "A typed client for the [`{service}`] service: one connection, shareable by any number of threads (clone it)."
    );
    let methods = model.methods.iter().map(|method| {
        let Parts {
            name,
            docs,
            params,
            args,
            constant,
            bounds,
        } = Parts::of(rt, method, false);
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
            /// The service's name and each method's signature, which the handshake
            /// exchanges: a call to a method the server lacks, or has with another
            /// signature, fails at once, unsent.
            pub fn info() -> #rt::ServiceInfo {
                #info
            }

            /// Connects over `transport`, checking in the handshake that the server serves
            /// this service, and learning which of its methods the server has.
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
pub(super) fn deadlines(rt: &TokenStream, field: &Ident, starter: &Ident, connections: &str) -> TokenStream {
    let copies = copies(rt, field, connections);
    quote! {
        #copies

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
    }
}

/// `with_deadline`, `with_timeout` and the deadline of a call starting now, for a client
/// (sync or async, single or pool) whose connection (or connections) is in `field`.
pub(super) fn copies(rt: &TokenStream, field: &Ident, connections: &str) -> TokenStream {
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

        fn __procwire_deadline(&self) -> ::core::option::Option<::std::time::Instant> {
            #rt::__private::deadline(self.deadline, self.timeout)
        }
    }
}

pub(super) fn starter(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis,
        service,
        client,
        starter,
        ..
    } = names;
    let doc = format!("Calls of [`{service}`] that return before their reply: see [`{client}::start`].");
    let methods = model.methods.iter().map(|method| {
        let Parts {
            name,
            docs,
            params,
            args,
            constant,
            bounds,
        } = Parts::of(rt, method, false);
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
pub(super) fn starter_type(
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

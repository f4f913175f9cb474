//! The async client: the same methods as the client, as `async fn`s returning the same
//! types, over the same kind of connection.

use super::*;

pub(super) fn async_client(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis, service, client, ..
    } = names;
    let async_client = format_ident!("{}AsyncClient", service);
    let doc = format!(
        "An async client for the [`{service}`] service: [`{client}`]'s methods as `async fn`s returning the \
         same types, on any executor (no thread of its own, none borrowed per call; see \
         `procwire_rpc::Client::call_async`). One connection, shareable by any number of tasks (clone it); \
         dropping a call's future before it is ready cancels the call on the server."
    );
    let copies = copies(rt, &format_ident!("client"), "connection");
    let connect_doc = format!(
        " Connects over `transport`, as [`{client}::connect`] does: the handshake is one round trip, \
         made before this returns."
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
                #[doc = "One-way: ready once the call is sent; no reply is awaited."]
                pub async fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::RpcError>
                where #(#bounds),*
                {
                    #constant
                    self.client.notify_async(METHOD, &#args, self.__procwire_deadline()).await
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        let call = quote!(self.client.call_async::<_, #wire>(METHOD, &#args, self.__procwire_deadline()).await);
        let (ret, body) = typed_reply(rt, &method.output, &wire, call);
        quote! {
            #(#docs)*
            pub async fn #name(&self, #(#params),*) -> #ret
            where #(#bounds),*
            {
                #constant
                #body
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #async_client {
            client: #rt::Client,
            deadline: ::core::option::Option<::std::time::Instant>,
            timeout: ::core::option::Option<::std::time::Duration>,
        }

        #[allow(unused_lifetimes)]
        impl #async_client {
            #[doc = #connect_doc]
            pub fn connect(transport: #rt::transport::Transport) -> ::core::result::Result<Self, #rt::RpcError> {
                ::core::result::Result::Ok(Self::from_client(#rt::Client::connect(transport, #client::info())?))
            }

            /// Connects with `config`.
            pub fn connect_with(
                transport: #rt::transport::Transport,
                config: #rt::ClientConfig,
            ) -> ::core::result::Result<Self, #rt::RpcError> {
                ::core::result::Result::Ok(Self::from_client(#rt::Client::connect_with(transport, #client::info(), config)?))
            }

            /// Wraps a connected untyped client (one connected with this service's `info()`).
            pub fn from_client(client: #rt::Client) -> Self {
                Self { client, deadline: ::core::option::Option::None, timeout: ::core::option::Option::None }
            }

            /// The untyped client underneath.
            pub fn client(&self) -> &#rt::Client {
                &self.client
            }

            #copies

            #(#methods)*
        }

        impl ::core::convert::From<#client> for #async_client {
            fn from(client: #client) -> Self {
                Self { client: client.client, deadline: client.deadline, timeout: client.timeout }
            }
        }
    }
}

/// The async pool client: the pool client's methods as `async fn`s.
pub(super) fn async_pool(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis, service, client, ..
    } = names;
    let pool = format_ident!("{}Pool", service);
    let async_pool = format_ident!("{}AsyncPool", service);
    let doc = format!(
        "An async client for a whole pool of [`{service}`] workers: [`{pool}`]'s constructors, routing, \
         retries and deadlines, and its methods as `async fn`s returning the same types. No executor thread is ever \
         blocked, not even while no worker is connected yet. Cheap to clone: clones share the connections."
    );
    let copies = copies(rt, &format_ident!("pool"), "connections");
    let constructors = constructors(rt, client);
    let methods = model.methods.iter().map(|method| {
        let Parts {
            name,
            docs,
            params,
            args,
            constant,
            bounds,
        } = Parts::of(rt, method, true);
        let method_name = name.to_string();
        let idempotent = method.idempotent;
        if method.oneway {
            return quote! {
                #(#docs)*
                pub async fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::RpcError>
                where #(#bounds),*
                {
                    #constant
                    let __procwire_args = &#args;
                    self.pool.notify_async(#method_name, #idempotent, self.__procwire_deadline(), move |__procwire_client: #rt::Client, __procwire_deadline| async move {
                        __procwire_client.notify_async(METHOD, __procwire_args, __procwire_deadline).await
                    }).await
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        let call = quote!({
            let __procwire_args = &#args;
            self.pool.call_async(#method_name, #idempotent, self.__procwire_deadline(), move |__procwire_client: #rt::Client, __procwire_deadline| async move {
                __procwire_client.call_async::<_, #wire>(METHOD, __procwire_args, __procwire_deadline).await
            }).await
        });
        let (ret, body) = typed_reply(rt, &method.output, &wire, call);
        quote! {
            #(#docs)*
            pub async fn #name(&self, #(#params),*) -> #ret
            where #(#bounds),*
            {
                #constant
                #body
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #async_pool {
            pool: #rt::pool::Pool,
            deadline: ::core::option::Option<::std::time::Instant>,
            timeout: ::core::option::Option<::std::time::Duration>,
        }

        #[allow(unused_lifetimes)]
        impl #async_pool {
            #constructors

            #copies

            #(#methods)*
        }

        impl ::core::convert::From<#pool> for #async_pool {
            fn from(pool: #pool) -> Self {
                Self { pool: pool.pool, deadline: pool.deadline, timeout: pool.timeout }
            }
        }
    }
}

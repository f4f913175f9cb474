//! The pool client and its starter: each call routed by `rpc::pool::Pool`.

use super::*;

pub(super) fn pool(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
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
        let Parts {
            name,
            docs,
            params,
            args,
            constant,
            bounds,
        } = Parts::of(rt, method, true);
        let method_name = name.to_string();
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
    let constructors = constructors(rt, client);
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
            #constructors

            #deadlines

            #(#methods)*
        }

        #starter_type
    }
}

/// `new`, `with_config` and `pool` of a pool client, sync or async.
pub(super) fn constructors(rt: &TokenStream, client: &Ident) -> TokenStream {
    quote! {
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
    }
}

//! `CalcPool::all()`: every method called on every worker of the pool at once.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::ast::{Output, Service};
use crate::expand::{client_args, docs, method_const, reply_type, wire_bounds, Names};

/// `{Service}PoolAll`, the `all()` view of `{Service}Pool`: one method per trait method,
/// each calling every worker concurrently with the pool's deadline and returning each
/// worker's reply by index; and the `all()` method that returns it.
pub(crate) fn all(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names { vis, service, .. } = names;
    let pool = format_ident!("{}Pool", service);
    let view = format_ident!("{}PoolAll", service);
    let doc = format!(
        "Calls to every worker of a [`{pool}`] at once (see [`{pool}::all`]): each method calls every \
         worker concurrently, with the pool's deadline for all, and returns each worker's reply, by \
         index. A worker that cannot be reached, or dies during the call, is reported, not waited for."
    );
    let methods = model.methods.iter().map(|method| {
        let name = method.name;
        let method_name = name.to_string();
        let docs = docs(method);
        let (params, args) = client_args(rt, method, true);
        let constant = method_const(rt, method);
        let bounds = wire_bounds(rt, method);
        if method.oneway {
            return quote! {
                #(#docs)*
                pub fn #name(&self, #(#params),*) -> ::std::vec::Vec<#rt::pool::WorkerReply<()>>
                where #(#bounds),*
                {
                    #constant
                    self.pool.pool.notify_all(#method_name, self.pool.__procwire_deadline(), |__procwire_client, __procwire_deadline| {
                        __procwire_client.notify(METHOD, &#args, #rt::Wait::deadline(__procwire_deadline))
                    })
                }
            };
        }
        let wire = reply_type(rt, &method.output);
        let (ret, map) = match &method.output {
            Output::Unit | Output::Value(_) => (quote!(#rt::pool::WorkerReply<#wire>), quote!(|__procwire_r| __procwire_r)),
            Output::ByteVec => (
                quote!(#rt::pool::WorkerReply<::std::vec::Vec<u8>>),
                quote!(|__procwire_r| __procwire_r.map(#rt::__private::serde_bytes::ByteBuf::into_vec)),
            ),
            Output::Result { ok, err } => (
                quote!(#rt::pool::WorkerReply<#ok, #rt::CallError<#err>>),
                quote!(|__procwire_r| __procwire_r
                    .map_err(#rt::CallError::Rpc)
                    .and_then(|__procwire_v| __procwire_v.map_err(#rt::CallError::Application))),
            ),
        };
        quote! {
            #(#docs)*
            pub fn #name(&self, #(#params),*) -> ::std::vec::Vec<#ret>
            where #(#bounds),*
            {
                #constant
                let __procwire_replies = self.pool.pool.all(
                    #method_name,
                    self.pool.__procwire_deadline(),
                    |__procwire_client, __procwire_deadline| {
                        __procwire_client.start::<_, #wire>(METHOD, &#args, __procwire_deadline)
                    },
                );
                ::core::iter::Iterator::collect(::core::iter::Iterator::map(
                    ::core::iter::IntoIterator::into_iter(__procwire_replies),
                    |__procwire_reply| __procwire_reply.map(#map),
                ))
            }
        }
    });
    let all_doc =
        format!("Calls to every worker at once, each method returning each worker's reply by index: see [`{view}`].");
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #view<'a> {
            pool: &'a #pool,
        }

        impl #pool {
            #[doc = #all_doc]
            pub fn all(&self) -> #view<'_> {
                #view { pool: self }
            }
        }

        #[allow(unused_lifetimes)]
        impl #view<'_> {
            #(#methods)*
        }
    }
}

//! The server dispatcher: decodes a call's arguments, runs the implementation, encodes the reply.

use super::*;

pub(super) fn server(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let Names {
        vis,
        service,
        client,
        server,
        service_name,
        ..
    } = names;
    let doc = format!("Serves any implementation of [`{service}`]: hand it to `Server::new`.");
    let (runner_field, constructors) = if model.methods.iter().any(|m| m.asyncness) {
        (
            quote!(runner: #rt::Runner,),
            quote! {
                /// Wraps an implementation whose `async fn` methods run on the tokio runtime
                /// this is called in (with the `tokio` feature), else on each server thread
                /// itself: see [`with_runner`](Self::with_runner).
                pub fn new(inner: __T) -> Self {
                    Self::with_runner(inner, #rt::Runner::current())
                }

                /// Wraps an implementation whose `async fn` methods run on `runner`: each
                /// call's future to completion on the server thread that took the call.
                pub fn with_runner(inner: __T, runner: #rt::Runner) -> Self {
                    Self { inner, runner }
                }
            },
        )
    } else {
        (
            quote!(),
            quote! {
                /// Wraps an implementation.
                pub fn new(inner: __T) -> Self {
                    Self { inner }
                }
            },
        )
    };
    let server_bounds: Vec<TokenStream> = model.methods.iter().flat_map(|m| wire_bounds(rt, m)).collect();
    let names_arms = model.methods.iter().map(|m| {
        let id = method_id(&m.name.to_string());
        let name = m.name.to_string();
        let cfgs = cfgs(m);
        quote!(#(#cfgs)* #id => ::core::option::Option::Some(#name),)
    });
    let call_arms = model.methods.iter().map(|method| {
        let id = method_id(&method.name.to_string());
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
        let reply = reply(rt, service, method, &passed);
        let cfgs = cfgs(method);
        quote! {
            #(#cfgs)*
            #id => {
                let (#(#vars,)*): (#(#types,)*) = #rt::decode_args(ctx, args)?;
                #reply
            }
        }
    });
    // A method whose one argument is a byte string takes it as the transport received it,
    // in a buffer of its own, when the transport split it off a large call.
    let bytes_arms = model.methods.iter().filter_map(|method| {
        let [arg] = &method.args[..] else {
            return None;
        };
        let pass = match arg.wire {
            Wire::ByteVec => quote!(__bytes),
            Wire::ByteSlice => quote!(::core::ops::Deref::deref(&__bytes)),
            _ => return None,
        };
        let id = method_id(&method.name.to_string());
        let reply = reply(rt, service, method, &[pass]);
        let cfgs = cfgs(method);
        Some(quote! {
            #(#cfgs)*
            #id => {
                if let ::core::option::Option::Some(__bytes) = args.__take_byte_string() {
                    return #reply;
                }
            }
        })
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #server<__T> {
            inner: __T,
            #runner_field
        }

        impl<__T> #server<__T> {
            #constructors

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

            #[allow(deprecated)]
            fn call_args(
                &self,
                ctx: &#rt::CallContext,
                args: &mut #rt::Args,
            ) -> ::core::result::Result<#rt::Frame, #rt::Fault> {
                match ctx.method() {
                    #(#bytes_arms)*
                    _ => {}
                }
                <Self as #rt::Service>::call(self, ctx, args.bytes())
            }
        }
    }
}

/// A method's run and its reply: the implementation called with `passed`, on the server's
/// runner for an `async fn`, its value sent back (a `Vec<u8>` as one byte string).
fn reply(rt: &TokenStream, service: &Ident, method: &Method<'_>, passed: &[TokenStream]) -> TokenStream {
    let name = method.name;
    let ctx_arg = method.context.map(|_| quote!(ctx,));
    let invoke = quote!(<__T as #service>::#name(&self.inner, #ctx_arg #(#passed),*));
    // An `async fn` runs to completion on this server thread, on the server's runner.
    let invoke = if method.asyncness {
        quote!(self.runner.block_on(#invoke))
    } else {
        invoke
    };
    match &method.output {
        Output::ByteVec => quote!(ctx.__reply(&#rt::__private::serde_bytes::Bytes::new(&#invoke))),
        _ => quote!(ctx.__reply(&#invoke)),
    }
}

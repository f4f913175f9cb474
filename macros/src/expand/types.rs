//! The types that travel: serde bounds and checks spanned to the user's types, and the
//! method signatures built from their `Schema`s.

use quote::quote_spanned;
use syn::spanned::Spanned;

use super::*;

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
pub(super) fn type_checks(rt: &TokenStream, model: &Service<'_>) -> TokenStream {
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

/// The body of the client's `info()`: the service's name and each method's signature, from
/// the `Schema` of each type as it travels, built once. Each type is named with its own
/// span, so that one lacking `Schema` is reported once, where it is written.
pub(super) fn info(rt: &TokenStream, model: &Service<'_>) -> TokenStream {
    let describe = |span: proc_macro2::Span, ty: TokenStream| quote_spanned!(span=> <#ty as #rt::Schema>::describe as #rt::schema::Describe);
    let methods = model.methods.iter().map(|method| {
        let name = method.name.to_string();
        let id = method_id(&name);
        let oneway = method.oneway;
        let args = method.args.iter().map(|arg| {
            let ty = arg.ty;
            describe(
                ty.span(),
                match arg.wire {
                    Wire::Owned | Wire::ByteVec => quote!(#ty),
                    Wire::Borrowed(inner) => quote!(#inner),
                    Wire::Slice(elem) => quote!([#elem]),
                    Wire::ByteSlice => quote!([u8]),
                    Wire::Str => quote!(str),
                },
            )
        });
        let span = match &method.item.sig.output {
            syn::ReturnType::Type(_, ty) => ty.span(),
            syn::ReturnType::Default => method.name.span(),
        };
        let result = describe(
            span,
            match &method.output {
                Output::Unit => quote!(()),
                Output::Value(ty) => quote!(#ty),
                Output::ByteVec => quote!(::std::vec::Vec<u8>),
                // As written, so that a missing `Schema` is reported at the user's type.
                Output::Result { .. } => match &method.item.sig.output {
                    syn::ReturnType::Type(_, ty) => quote!(#ty),
                    syn::ReturnType::Default => unreachable!("a `Result` is written"),
                },
            },
        );
        let cfgs = cfgs(method);
        quote! {
            #(#cfgs)*
            __procwire_info.methods.push(#rt::MethodSignature::of(
                #rt::Method::new(#id, #name),
                #oneway,
                &[#(#args),*],
                #result,
            ));
        }
    });
    quote! {
        static __PROCWIRE_INFO: ::std::sync::OnceLock<#rt::ServiceInfo> = ::std::sync::OnceLock::new();
        ::core::clone::Clone::clone(__PROCWIRE_INFO.get_or_init(|| {
            let mut __procwire_info = #rt::ServiceInfo::new(Self::SERVICE);
            #(#methods)*
            __procwire_info
        }))
    }
}

//! `#[derive(Schema)]`: a struct's or an enum's structural description, field by field.
//!
//! What it writes is documented on `procwire_rpc::schema`: `{a: A, b: B}` for named
//! fields, the inner type for a newtype, `(A, B)` for a tuple struct, `()` for a unit one,
//! `enum {V, W(T), X {f: F}}` for an enum; every type parameter must be a `Schema` too.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Data, DeriveInput, Fields};

use crate::ast::Ctxt;

/// The whole expansion: the impl, or the errors.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::default();
    let rt = runtime(&cx, input);
    let body = match &input.data {
        Data::Struct(s) => fields(&rt, &s.fields, true),
        Data::Enum(e) => {
            let variants = e.variants.iter().enumerate().map(|(i, v)| {
                let sep = (i > 0).then(|| quote!(__procwire_w.write(", ");));
                let name = v.ident.to_string();
                let fields = match &v.fields {
                    Fields::Unit => quote!(),
                    Fields::Unnamed(_) => {
                        let inner = fields(&rt, &v.fields, false);
                        quote!(__procwire_w.write("("); #inner __procwire_w.write(")");)
                    }
                    Fields::Named(_) => {
                        let inner = fields(&rt, &v.fields, false);
                        quote!(__procwire_w.write(" "); #inner)
                    }
                };
                quote!(#sep __procwire_w.write(#name); #fields)
            });
            quote!(__procwire_w.write("enum {"); #(#variants)* __procwire_w.write("}");)
        }
        Data::Union(u) => {
            cx.error(
                u.union_token,
                "a union has no structure serde can encode; implement `Schema` by hand",
            );
            quote!()
        }
    };
    if let Err(e) = cx.check() {
        return e.into_compile_error();
    }
    let ident = &input.ident;
    let mut generics = input.generics.clone();
    for param in generics.type_params_mut() {
        param.bounds.push(syn::parse_quote!(#rt::Schema));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    quote! {
        impl #impl_generics #rt::Schema for #ident #ty_generics #where_clause {
            fn describe(__procwire_w: &mut #rt::SchemaWriter) {
                __procwire_w.named::<Self>(|__procwire_w| { #body });
            }
        }
    }
}

/// The description of `fields`: for a struct (`whole`), a newtype is its inner type and a
/// tuple struct a tuple; inside an enum's variant, the fields between the variant's brackets.
fn fields(rt: &TokenStream, fields: &Fields, whole: bool) -> TokenStream {
    let item = |ty: &syn::Type| quote!(__procwire_w.item::<#ty>(););
    match fields {
        Fields::Unit => quote!(__procwire_w.write("()");),
        Fields::Named(named) => {
            let each = named.named.iter().enumerate().map(|(i, f)| {
                let label = format!(
                    "{}{}: ",
                    if i > 0 { ", " } else { "" },
                    f.ident.as_ref().expect("named")
                );
                let item = item(&f.ty);
                quote!(__procwire_w.write(#label); #item)
            });
            quote!(__procwire_w.write("{"); #(#each)* __procwire_w.write("}");)
        }
        Fields::Unnamed(unnamed) => {
            let types: Vec<&syn::Type> = unnamed.unnamed.iter().map(|f| &f.ty).collect();
            if whole && types.len() == 1 {
                return item(types[0]);
            }
            let each = types
                .iter()
                .map(|ty| quote!(<#ty as #rt::Schema>::describe as #rt::schema::Describe));
            let (open, close) = if whole { ("(", ")") } else { ("", "") };
            quote!(__procwire_w.list(#open, &[#(#each),*], #close);)
        }
    }
}

/// The runtime's path: `#[procwire(crate = path)]` on the type, else found as for
/// `#[service]`.
fn runtime(cx: &Ctxt, input: &DeriveInput) -> TokenStream {
    let args = input
        .attrs
        .iter()
        .find(|a| a.path().is_ident("procwire"))
        .map(|a| match &a.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            other => other.to_token_stream(),
        })
        .unwrap_or_default();
    crate::expand::runtime(cx, args)
}

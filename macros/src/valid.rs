//! Checks the model; every problem is recorded, each at the offending token.

use syn::{FnArg, ReturnType, TraitItem, Type};

use crate::ast::{is_call_context, Ctxt, Output, Service};

/// Methods procwire generates on the client and the pool client; a trait method of the same
/// name would clash.
pub const GENERATED: &[&str] = &[
    "connect",
    "connect_with",
    "from_client",
    "client",
    "info",
    "with_deadline",
    "with_timeout",
    "start",
    "try_start",
    "new",
    "with_config",
    "pool",
];

/// Checks everything a service trait must satisfy.
pub fn check(cx: &Ctxt, service: &Service<'_>) {
    let item = service.item;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error(
            &item.generics,
            "a service trait cannot be generic: both processes must agree on every type",
        );
    }
    if let Some(unsafety) = &item.unsafety {
        cx.error(unsafety, "a service trait cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        cx.error(auto, "a service trait cannot be an auto trait");
    }
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(_) => {}
            TraitItem::Const(c) => cx.error(&c.ident, "a service trait has methods only; move this constant out"),
            TraitItem::Type(t) => cx.error(
                &t.ident,
                "a service trait has methods only; associated types cannot cross processes",
            ),
            other => cx.error(other, "a service trait has methods only"),
        }
    }
    let mut ids = std::collections::HashMap::new();
    for method in &service.methods {
        for e in &method.attr_errors {
            cx.syn_error(e.clone());
        }
        let sig = &method.item.sig;
        let name = method.name.to_string();
        if GENERATED.contains(&name.as_str()) || name.starts_with("__procwire") {
            cx.error(
                method.name,
                format!("`{name}` clashes with a method procwire generates on the client; rename it"),
            );
        }
        if let Some(previous) = ids.insert(crate::expand::method_id(&name), method.name) {
            cx.error(
                method.name,
                format!("`{name}` and `{previous}` hash to the same method id; rename one"),
            );
        }
        if let Some(t) = &sig.constness {
            cx.error(t, "service methods cannot be `const`");
        }
        if let Some(t) = &sig.unsafety {
            cx.error(t, "service methods cannot be `unsafe`");
        }
        if let Some(t) = &sig.abi {
            cx.error(t, "service methods cannot have an ABI");
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error(
                &sig.generics,
                "service methods cannot be generic: both processes must agree on every type",
            );
        }
        if let Some(v) = &sig.variadic {
            cx.error(v, "service methods cannot be variadic");
        }
        match sig.inputs.first() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
            Some(FnArg::Receiver(r)) if r.mutability.is_some() && r.reference.is_some() => cx.error(
                r,
                "service methods take `&self`: calls from many clients run concurrently; use interior mutability",
            ),
            Some(FnArg::Receiver(r)) => cx.error(
                r,
                "service methods take `&self`, not `self` by value or a typed receiver",
            ),
            _ => cx.error(&sig.ident, "service methods take `&self` as their first argument"),
        }
        for input in sig.inputs.iter().skip(1) {
            if let FnArg::Typed(t) = input {
                if is_call_context(&t.ty) && !method.context.is_some_and(|c| std::ptr::eq(c, t)) {
                    cx.error(&t.ty, "a `&CallContext` argument must come first, right after `&self`");
                }
            }
        }
        for arg in &method.args {
            if arg.name.is_none() {
                cx.error(arg.pat, "service method arguments must be plain names, not patterns");
            }
            check_type(cx, arg.ty, "argument");
            let inner = match &arg.ty {
                Type::Reference(r) => &*r.elem,
                other => other,
            };
            if contains_reference(inner) {
                cx.error(
                    arg.ty,
                    "a borrow inside an argument type cannot be decoded on the server; use an owned type (String, Vec<T>)",
                );
            }
        }
        match &sig.output {
            ReturnType::Type(_, ty) => {
                check_type(cx, ty, "return");
                if contains_reference(ty) {
                    cx.error(
                        ty,
                        "a service method cannot return a borrow: the reply crosses a process boundary",
                    );
                }
                if method.oneway && !matches!(method.output, Output::Unit) {
                    cx.error(
                        ty,
                        "a `oneway` method returns nothing: its caller does not wait for a reply",
                    );
                }
            }
            ReturnType::Default => {}
        }
    }
}

fn check_type(cx: &Ctxt, ty: &Type, what: &str) {
    match ty {
        Type::ImplTrait(_) => cx.error(
            ty,
            format!("an {what} type must be a concrete serde type, not `impl Trait`"),
        ),
        Type::TraitObject(_) => cx.error(
            ty,
            format!("an {what} type must be a concrete serde type, not a trait object"),
        ),
        Type::Reference(r) if r.mutability.is_some() => cx.error(
            ty,
            "a `&mut` argument cannot cross a process boundary; return the new value instead",
        ),
        Type::Reference(r) if r.lifetime.is_some() => cx.error(
            &r.lifetime,
            "service method types cannot name lifetimes; leave them elided",
        ),
        Type::BareFn(_) => cx.error(ty, "a function pointer cannot cross a process boundary"),
        Type::Ptr(_) => cx.error(ty, "a raw pointer cannot cross a process boundary"),
        Type::Infer(_) | Type::Never(_) => cx.error(ty, format!("an {what} type must be a concrete serde type")),
        _ => {}
    }
}

fn contains_reference(ty: &Type) -> bool {
    match ty {
        Type::Reference(_) => true,
        Type::Tuple(t) => t.elems.iter().any(contains_reference),
        Type::Array(a) => contains_reference(&a.elem),
        Type::Slice(s) => contains_reference(&s.elem),
        Type::Paren(p) => contains_reference(&p.elem),
        Type::Group(g) => contains_reference(&g.elem),
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            syn::PathArguments::AngleBracketed(a) => a
                .args
                .iter()
                .any(|a| matches!(a, syn::GenericArgument::Type(t) if contains_reference(t))),
            _ => false,
        }),
        _ => false,
    }
}

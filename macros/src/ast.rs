//! The model of a service trait, keeping the original syntax nodes for error spans.

use std::cell::RefCell;

use syn::{FnArg, Ident, ItemTrait, Pat, PathArguments, ReturnType, TraitItem, TraitItemFn, Type};

/// Collects errors so that every problem is reported at once.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    /// Records an error at `tokens`.
    pub fn error(&self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.errors.borrow_mut().push(syn::Error::new_spanned(tokens, message));
    }

    /// Records a parse error.
    pub fn syn_error(&self, error: syn::Error) {
        self.errors.borrow_mut().push(error);
    }

    /// All errors recorded, combined into one, if any.
    pub fn check(self) -> Result<(), syn::Error> {
        let mut errors = self.errors.into_inner().into_iter();
        let Some(mut first) = errors.next() else { return Ok(()) };
        for e in errors {
            first.combine(e);
        }
        Err(first)
    }
}

/// A service trait.
pub struct Service<'a> {
    /// The trait as written.
    pub item: &'a ItemTrait,
    /// Its methods, in declaration order.
    pub methods: Vec<Method<'a>>,
}

/// One method of the trait.
pub struct Method<'a> {
    /// The method as written.
    pub item: &'a TraitItemFn,
    /// Its name.
    pub name: &'a Ident,
    /// `#[procwire(oneway)]`.
    pub oneway: bool,
    /// `async fn`: the server runs its future on the server's `Runner`.
    pub asyncness: bool,
    /// `#[procwire(idempotent)]`: safe to repeat, so a pool client retries it on the other
    /// workers (each at most once) if its worker dies.
    pub idempotent: bool,
    /// The `&CallContext` argument, if it takes one.
    pub context: Option<&'a syn::PatType>,
    /// The arguments a client passes.
    pub args: Vec<Arg<'a>>,
    /// What it returns.
    pub output: Output<'a>,
    /// Malformed `#[procwire(...)]` attributes, reported with the method's other errors so
    /// that errors come in source order.
    pub attr_errors: Vec<syn::Error>,
}

/// One argument a client passes.
pub struct Arg<'a> {
    /// The pattern as written; valid only if it is a plain name.
    pub pat: &'a Pat,
    /// The name, if the pattern is a plain name.
    pub name: Option<&'a Ident>,
    /// The type as written.
    pub ty: &'a Type,
    /// How it travels.
    pub wire: Wire<'a>,
}

/// How an argument travels and is handed to the implementation.
pub enum Wire<'a> {
    /// By value, as itself.
    Owned,
    /// `&T`: the client sends the `T`; the server decodes an owned `T` and lends it.
    Borrowed(&'a Type),
    /// `&[u8]`: one byte string, borrowed from the frame on the server.
    ByteSlice,
    /// `&[T]`: the server decodes a `Vec<T>` and lends it as a slice.
    Slice(&'a Type),
    /// `Vec<u8>`: one byte string.
    ByteVec,
    /// `&str`: borrowed from the frame on the server.
    Str,
}

/// What a method returns.
pub enum Output<'a> {
    /// Nothing.
    Unit,
    /// A value.
    Value(&'a Type),
    /// `Vec<u8>`, sent as one byte string.
    ByteVec,
    /// `Result<T, E>`: `E` reaches the client typed.
    Result {
        /// The `T`.
        ok: &'a Type,
        /// The `E`.
        err: &'a Type,
    },
}

/// Reads the trait into the model. Items that are not methods are left for validation.
pub fn parse(item: &ItemTrait) -> Service<'_> {
    let methods = item
        .items
        .iter()
        .filter_map(|i| match i {
            TraitItem::Fn(f) => Some(parse_method(f)),
            _ => None,
        })
        .collect();
    Service { item, methods }
}

fn parse_method(item: &TraitItemFn) -> Method<'_> {
    let mut oneway = false;
    let mut idempotent = false;
    let mut attr_errors = Vec::new();
    for attr in item.attrs.iter().filter(|a| a.path().is_ident("procwire")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                idempotent = true;
                Ok(())
            } else if meta.path.is_ident("oneway") {
                oneway = true;
                Ok(())
            } else {
                let path = &meta.path;
                Err(meta.error(format!(
                    "unknown procwire attribute `{}`; the known ones are `oneway` and `idempotent`",
                    quote::quote!(#path).to_string().replace(' ', "")
                )))
            }
        });
        if let Err(e) = parsed {
            attr_errors.push(e);
        }
    }
    let mut context = None;
    let mut args = Vec::new();
    for (i, input) in item.sig.inputs.iter().enumerate() {
        let FnArg::Typed(pat_type) = input else { continue };
        if is_call_context(&pat_type.ty) {
            // Only valid right after the receiver; validation says so otherwise.
            if i == 1 && context.is_none() {
                context = Some(pat_type);
                continue;
            }
        }
        let name = match &*pat_type.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => Some(&p.ident),
            _ => None,
        };
        args.push(Arg {
            pat: &pat_type.pat,
            name,
            ty: &pat_type.ty,
            wire: wire_of(&pat_type.ty),
        });
    }
    let output = match &item.sig.output {
        ReturnType::Default => Output::Unit,
        ReturnType::Type(_, ty) => output_of(ty),
    };
    Method {
        item,
        name: &item.sig.ident,
        oneway,
        asyncness: item.sig.asyncness.is_some(),
        idempotent,
        context,
        args,
        output,
        attr_errors,
    }
}

fn wire_of(ty: &Type) -> Wire<'_> {
    if is_vec_u8(ty) {
        return Wire::ByteVec;
    }
    match ty {
        Type::Reference(r) if r.mutability.is_none() => match &*r.elem {
            Type::Slice(s) if is_ident(&s.elem, "u8") => Wire::ByteSlice,
            Type::Slice(s) => Wire::Slice(&s.elem),
            elem if is_ident(elem, "str") => Wire::Str,
            elem => Wire::Borrowed(elem),
        },
        _ => Wire::Owned,
    }
}

fn output_of(ty: &Type) -> Output<'_> {
    if let Type::Tuple(t) = ty {
        if t.elems.is_empty() {
            return Output::Unit;
        }
    }
    if is_vec_u8(ty) {
        return Output::ByteVec;
    }
    if let Some([ok, err]) = generic_args(ty, "Result").as_deref() {
        return Output::Result { ok, err };
    }
    Output::Value(ty)
}

/// The type arguments of a path type whose last segment is `name`.
fn generic_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn is_ident(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
}

fn is_vec_u8(ty: &Type) -> bool {
    matches!(generic_args(ty, "Vec").as_deref(), Some([elem]) if is_ident(elem, "u8"))
}

/// `&CallContext` (by any path).
pub fn is_call_context(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => {
            matches!(&*r.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "CallContext"))
        }
        _ => false,
    }
}

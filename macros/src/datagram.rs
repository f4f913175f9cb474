//! The datagram sender a service with one-way methods gets: `CalcDatagrams` for `Calc`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::ast::Service;
use crate::expand::{client_args, docs, method_const, wire_bounds, Names};

/// `{Service}Datagrams`: the trait's `#[procwire(oneway)]` methods, each sent as one datagram
/// through a `procwire_rpc::datagram::Sender`; nothing for a service without any.
pub(crate) fn datagrams(rt: &TokenStream, names: &Names, model: &Service<'_>) -> TokenStream {
    let oneway: Vec<_> = model.methods.iter().filter(|m| m.oneway).collect();
    if oneway.is_empty() {
        return TokenStream::new();
    }
    let Names {
        vis, service, client, ..
    } = names;
    let datagrams = format_ident!("{}Datagrams", service);
    let doc = format!(
        "Sends the one-way methods of the [`{service}`] service as datagrams, over a Unix datagram socket or UDP: best effort, no connection, no reply (see `procwire_rpc::datagram` for what is and is not guaranteed)."
    );
    let methods = oneway.iter().map(|method| {
        let name = method.name;
        let docs = docs(method);
        let (params, args) = client_args(rt, method, false);
        let constant = method_const(rt, method);
        let bounds = wire_bounds(rt, method);
        quote! {
            #(#docs)*
            #[doc = ""]
            #[doc = "Sent as one datagram: `Ok` means the local kernel took it, not that it arrived."]
            pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #rt::datagram::DatagramError>
            where #(#bounds),*
            {
                #constant
                self.sender.send(METHOD, &#args)
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        #vis struct #datagrams {
            sender: #rt::datagram::Sender,
        }

        // The higher-ranked serde bounds name a lifetime only to defer their check.
        #[allow(unused_lifetimes)]
        impl #datagrams {
            /// Sends to the Unix datagram socket at `path`.
            pub fn unix(path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<Self, #rt::datagram::DatagramError> {
                ::core::result::Result::Ok(Self::from_sender(#rt::datagram::Sender::unix(path, #client::info())?))
            }

            /// Sends to the UDP address `addr`.
            pub fn udp(addr: impl ::std::net::ToSocketAddrs) -> ::core::result::Result<Self, #rt::datagram::DatagramError> {
                ::core::result::Result::Ok(Self::from_sender(#rt::datagram::Sender::udp(addr, #client::info())?))
            }

            /// Wraps a sender made for this service (with its fingerprint).
            pub fn from_sender(sender: #rt::datagram::Sender) -> Self {
                Self { sender }
            }

            /// The sender, to set its limit and timeout.
            pub fn sender_mut(&mut self) -> &mut #rt::datagram::Sender {
                &mut self.sender
            }

            #(#methods)*
        }
    }
}

//! Snapshots of each macro's expansion, one per input shape, and of combined errors.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{parse_quote, DeriveInput, ItemImpl};

use crate::expand;

fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(error) => panic!("expansion is not valid Rust: {error}\n{tokens}"),
    }
}

/// Every error of a combined `syn::Error`, one per line (its `Display` shows the first).
fn errors(error: syn::Error) -> String {
    error.into_iter().map(|e| format!("error: {e}\n")).collect()
}

fn event(input: DeriveInput) -> String {
    pretty(expand::event::expand(&input).unwrap_or_else(|e| panic!("{}", errors(e))))
}

fn events(input: DeriveInput) -> String {
    pretty(expand::events::expand(&input).unwrap_or_else(|e| panic!("{}", errors(e))))
}

fn command(input: DeriveInput) -> String {
    pretty(expand::command::expand(&input).unwrap_or_else(|e| panic!("{}", errors(e))))
}

fn aggregate(args: TokenStream, item: ItemImpl) -> String {
    pretty(expand::aggregate::expand(args, item).unwrap_or_else(|e| panic!("{}", errors(e))))
}

#[test]
fn event_defaults() {
    insta::assert_snapshot!(event(parse_quote! {
        struct AccountOpened { owner: String }
    }));
}

#[test]
fn event_name_version_aliases() {
    insta::assert_snapshot!(event(parse_quote! {
        #[event(name = "MoneyDeposited", version = 2, aliases = ["Deposited", "CashIn"])]
        #[event(upcast(from = 1, with = DepositedV1))]
        struct Deposited { amount: u64, memo: String }
    }));
}

#[test]
fn event_typed_chain() {
    insta::assert_snapshot!(event(parse_quote! {
        #[event(version = 3, upcast(from = 2, with = V2), upcast(from = 1, with = V1))]
        struct Renamed(String);
    }));
}

#[test]
fn event_json_upcasts() {
    insta::assert_snapshot!(event(parse_quote! {
        #[event(
            version = 4,
            upcast(from = 1, json = upcasters::v1_to_v2),
            upcast(from = 2, with = V2),
            upcast(from = 3, json = upcasters::v3_to_v4),
        )]
        struct Mixed;
    }));
}

#[test]
fn event_renamed_crate_and_generics() {
    insta::assert_snapshot!(event(parse_quote! {
        #[annals(crate = "::my_annals")]
        struct Tagged<T> where T: Clone { tag: T }
    }));
}

#[test]
fn events_enum() {
    insta::assert_snapshot!(events(parse_quote! {
        enum AccountEvent {
            Opened(AccountOpened),
            Deposited(money::Deposited),
            Closed(Closed),
        }
    }));
}

#[test]
fn events_empty_enum() {
    insta::assert_snapshot!(events(parse_quote! {
        #[annals(crate = "renamed")]
        enum NoEvents {}
    }));
}

#[test]
fn command_named() {
    insta::assert_snapshot!(command(parse_quote! {
        #[command(aggregate = Account)]
        struct Deposit { #[command(id)] account: AccountId, amount: u64 }
    }));
}

#[test]
fn command_tuple_generic() {
    insta::assert_snapshot!(command(parse_quote! {
        #[command(aggregate = crate::bank::Account)]
        #[annals(crate = "::renamed")]
        struct Close<R: Clone>(u64, #[command(id)] AccountId, R);
    }));
}

#[test]
fn aggregate_full() {
    insta::assert_snapshot!(aggregate(
        quote!(
            id = AccountId,
            event = AccountEvent,
            error = AccountError,
            ignore(Audited),
            snapshot(every = 100, version = 2),
            name = "bank.account",
        ),
        parse_quote! {
            impl Account {
                #[command(create)]
                fn open(&self, cmd: OpenAccount) -> Result<AccountOpened, AccountError> {
                    Ok(AccountOpened { owner: cmd.owner })
                }

                #[command]
                async fn transfer(
                    &self,
                    cmd: Transfer,
                    rates: &Rates,
                ) -> Result<Vec<AccountEvent>, AccountError> {
                    todo!()
                }

                #[command(any)]
                fn touch(&self, _: Touch) -> Result<(), AccountError> {
                    Ok(())
                }

                #[apply]
                fn opened(&mut self, e: &AccountOpened) {
                    self.open = true;
                }

                #[apply]
                fn transferred(&mut self, e: &Transferred) {}

                fn helper(&self) -> bool {
                    self.open
                }
            }
        },
    ));
}

#[test]
fn aggregate_minimal_explicit_services_and_command_enum() {
    insta::assert_snapshot!(aggregate(
        quote!(
            id = u64,
            event = CounterEvent,
            error = std::convert::Infallible,
            services = Clock,
            command_enum(name = CounterRequest, vis = pub(crate), tag = "type", content = "args"),
            crate = "::renamed",
        ),
        parse_quote! {
            impl Counter {
                #[command(existing)]
                fn bump(&self, cmd: Bump) -> Result<Bumped, std::convert::Infallible> {
                    Ok(Bumped)
                }

                #[apply]
                fn bumped(&mut self, _: &Bumped) {}
            }
        },
    ));
}

#[test]
fn aggregate_without_command_enum() {
    insta::assert_snapshot!(aggregate(
        quote!(id = u64, event = E, error = Error, command_enum(skip)),
        parse_quote! {
            impl Quiet {
                #[command]
                fn poke(&self, cmd: Poke) -> Result<(), Error> { Ok(()) }
                #[apply]
                fn poked(&mut self, _: &Poked) {}
            }
        },
    ));
}

#[test]
fn combined_errors() {
    let mut out = String::new();

    out.push_str("== event ==\n");
    let input: DeriveInput = parse_quote! {
        #[event(name = "", version = 0, colour = "red", version = 3)]
        #[event(aliases = ["", "Dup", "Dup"], upcast(from = 0, with = A, json = f), upcast(with = B))]
        #[event(upcast(from = 5, with = C), upcast(from = 2, json = g), upcast(from = 2, with = D))]
        #[annals(krate = "x")]
        struct Bad;
    };
    out.push_str(&errors(expand::event::expand(&input).unwrap_err()));

    out.push_str("== events ==\n");
    let input: DeriveInput = parse_quote! {
        enum BadEvents<T> {
            Unit,
            Pair(A, B),
            Named { a: A },
            Fine(A),
            Again(A),
        }
    };
    out.push_str(&errors(expand::events::expand(&input).unwrap_err()));

    out.push_str("== command ==\n");
    let input: DeriveInput = parse_quote! {
        #[command(agregate = Account)]
        struct BadCommand { #[command(id)] a: u64, #[command(id, key)] b: u64 }
    };
    out.push_str(&errors(expand::command::expand(&input).unwrap_err()));
    let input: DeriveInput = parse_quote! {
        #[command(aggregate = Account, aggregate = Other)]
        struct NoId { a: u64 }
    };
    out.push_str(&errors(expand::command::expand(&input).unwrap_err()));

    out.push_str("== aggregate ==\n");
    let args = quote!(
        id = u64,
        id = u32,
        colour = red,
        snapshot(every = 0),
        command_enum(skip, tag = "x")
    );
    let item: ItemImpl = parse_quote! {
        impl<T> Bad<T> {
            #[command(create, any)]
            fn a(&mut self, cmd: A) -> Result<(), E> { Ok(()) }
            #[command]
            fn b(&self, cmd: &B) {}
            #[command]
            fn c(self) {}
            #[command]
            fn d<X>(&self, cmd: D, s: &S1, extra: u8) -> Result<(), E> { Ok(()) }
            #[command]
            fn e(&self, cmd: E, s: &S2) -> Result<(), E> { Ok(()) }
            #[command]
            fn e_again(&self, cmd: E) -> Result<(), E> { Ok(()) }
            #[command(sometimes)]
            #[apply]
            fn f(&self, cmd: F) -> Result<(), E> { Ok(()) }
            #[apply]
            async fn g(&self, e: G) -> bool { true }
            #[apply]
            fn h(&mut self, e: &H) {}
            #[apply(x)]
            fn h_again(&mut self, e: &H) {}
        }
    };
    out.push_str(&errors(expand::aggregate::expand(args, item).unwrap_err()));
    let item: ItemImpl = parse_quote! { impl Default for Bad {} };
    out.push_str(&errors(
        expand::aggregate::expand(quote!(ignore(X, X)), item).unwrap_err(),
    ));

    insta::assert_snapshot!(out);
}

fn projection(args: TokenStream, item: ItemImpl) -> String {
    pretty(expand::projection::expand(args, item).unwrap_or_else(|e| panic!("{}", errors(e))))
}

#[test]
fn projection_with_transaction_meta_and_reset() {
    insta::assert_snapshot!(projection(
        quote!(name = "balances"),
        parse_quote! {
            impl Balances {
                #[on]
                async fn opened(&mut self, e: &AccountOpened, m: &EventMeta, tx: &mut SqliteTx) -> Result<(), sqlx::Error> {
                    Ok(())
                }
                #[on]
                fn deposited(&mut self, e: &Deposited, tx: &mut SqliteTx) {}
                #[reset]
                async fn truncate(&mut self, tx: &mut SqliteTx) -> Result<(), sqlx::Error> {
                    Ok(())
                }
                fn helper(&self) {}
            }
        },
    ));
}

#[test]
fn projection_without_transaction_is_generic_over_it() {
    insta::assert_snapshot!(projection(
        quote!(),
        parse_quote! {
            impl Counter {
                #[on]
                fn deposited(&self, e: &Deposited) {}
            }
        },
    ));
}

#[test]
fn projection_combined_errors() {
    let error = expand::projection::expand(
        quote!(name = "", unknown = 1),
        parse_quote! {
            impl Broken {
                #[on]
                fn by_value(&mut self, e: Deposited) {}
                #[on]
                fn two_txs(&mut self, e: &Opened, a: &mut TxA) {}
                #[on]
                fn other_tx(&mut self, e: &Closed, b: &mut TxB) {}
                #[on]
                fn again(&mut self, e: &Opened) {}
                #[on]
                fn bad_return(&mut self, e: &Renamed) -> u32 { 0 }
                #[on(x)]
                fn with_args(self, e: &Moved) {}
            }
        },
    )
    .expect_err("invalid projection");
    insta::assert_snapshot!(errors(error));
}

fn reactor(args: TokenStream, item: ItemImpl) -> String {
    pretty(expand::reactor::expand(args, item).unwrap_or_else(|e| panic!("{}", errors(e))))
}

#[test]
fn reactor_with_meta_async_and_options() {
    insta::assert_snapshot!(reactor(
        quote!(name = "inventory_on_orders"),
        parse_quote! {
            impl InventoryPolicy {
                #[on]
                fn placed(&self, e: &OrderPlaced, m: &EventMeta) -> Option<ReserveStock> {
                    None
                }
                #[on]
                async fn cancelled(&self, e: &OrderCancelled) -> Result<Vec<InventoryCommand>, Error> {
                    Ok(vec![])
                }
                fn helper(&self) {}
            }
        },
    ));
}

#[test]
fn reactor_ignoring_refusals() {
    insta::assert_snapshot!(reactor(
        quote!(name = "notify", rejected = ignore),
        parse_quote! {
            impl Notify {
                #[on]
                fn out_of_stock(&self, e: &OutOfStock) -> (RejectOrder, Notify) {
                    todo!()
                }
            }
        },
    ));
}

#[test]
fn reactor_compensating() {
    insta::assert_snapshot!(reactor(
        quote!(name = "payments"),
        parse_quote! {
            impl Payments {
                #[on]
                fn placed(&self, e: &OrderPlaced) -> Charge {
                    todo!()
                }
                #[rejected]
                async fn refused(&self, r: &Rejection, m: &EventMeta) -> CancelOrder {
                    todo!()
                }
            }
        },
    ));
}

#[test]
fn reactor_combined_errors() {
    let error = expand::reactor::expand(
        quote!(rejected = retry, unknown = 1),
        parse_quote! {
            impl Broken {
                #[on]
                fn by_value(&self, e: Deposited) {}
                #[on]
                fn mutable(&mut self, e: &Opened) {}
                #[on]
                fn again(&self, e: &Opened) {}
                #[on]
                fn extra(&self, e: &Closed, tx: &mut Tx) {}
                #[on(x)]
                fn with_args(&self, e: &Moved) {}
            }
        },
    )
    .expect_err("invalid reactor");
    insta::assert_snapshot!(errors(error));
}

fn process(args: TokenStream, item: ItemImpl) -> String {
    pretty(expand::process::expand(args, item).unwrap_or_else(|e| panic!("{}", errors(e))))
}

#[test]
fn process_with_field_key_and_deadline() {
    insta::assert_snapshot!(process(
        quote!(name = "order_payment", key = order),
        parse_quote! {
            impl OrderPayment {
                #[on]
                fn placed(&mut self, e: &OrderPlaced, m: &EventMeta, ctx: &mut Ctx) {
                    ctx.schedule_in("payment_due", PAY_WINDOW);
                }
                #[on]
                async fn paid(&mut self, e: &OrderPaid, ctx: &mut Ctx) -> Option<ShipOrder> {
                    ctx.complete();
                    None
                }
                #[deadline]
                fn payment_due(&mut self) -> CancelOrder {
                    todo!()
                }
            }
        },
    ));
}

#[test]
fn process_keyed_by_stream() {
    insta::assert_snapshot!(process(
        quote!(name = "follow", key = stream_id),
        parse_quote! {
            impl Follow {
                #[on]
                fn placed(&mut self, e: &OrderPlaced) {}
            }
        },
    ));
}

#[test]
fn process_with_services_and_compensation() {
    insta::assert_snapshot!(process(
        quote!(name = "billing", key = order),
        parse_quote! {
            impl Billing {
                #[on]
                fn placed(
                    &mut self,
                    e: &OrderPlaced,
                    m: &EventMeta,
                    prices: &Prices,
                    ctx: &mut Ctx,
                ) -> ChargeOrder {
                    todo!()
                }
                #[on]
                fn paid(&mut self, e: &OrderPaid, prices: &Prices) {}
                #[deadline]
                async fn payment_due(&mut self, prices: &Prices, ctx: &mut Ctx) -> CancelOrder {
                    todo!()
                }
                #[rejected]
                fn refused(&mut self, r: &Rejection, prices: &Prices) -> Option<RefundOrder> {
                    None
                }
            }
        },
    ));
}

#[test]
fn process_declared_services_ignoring_refusals() {
    insta::assert_snapshot!(process(
        quote!(
            name = "follow",
            key = stream_id,
            services = Clock,
            rejected = ignore
        ),
        parse_quote! {
            impl Follow {
                #[on]
                fn placed(&mut self, e: &OrderPlaced) {}
            }
        },
    ));
}

#[test]
fn process_combined_errors() {
    let error = expand::process::expand(
        quote!(unknown = 1),
        parse_quote! {
            impl Broken {
                #[on]
                fn shared(&self, e: &Opened) {}
                #[on]
                fn by_value(&mut self, e: Closed) {}
                #[deadline]
                fn due(&mut self, m: &EventMeta) {}
            }
        },
    )
    .expect_err("invalid process");
    insta::assert_snapshot!(errors(error));
}

#[test]
fn process_services_and_rejected_errors() {
    let error = expand::process::expand(
        quote!(name = "broken", key = order, rejected = retry),
        parse_quote! {
            impl Broken {
                #[on]
                fn opened(&mut self, e: &Opened, prices: &Prices, ctx: &mut Ctx) {}
                #[on]
                fn closed(&mut self, e: &Closed, ctx: &mut Ctx, clock: &Clock) {}
                #[deadline]
                fn due(&mut self, clock: &mut Clock) {}
                #[rejected]
                fn refused(&mut self, r: Rejection) {}
            }
        },
    )
    .expect_err("invalid process");
    insta::assert_snapshot!(errors(error));
}

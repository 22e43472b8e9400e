//! Calling a plugin of any contract version the host implements, in the
//! current model, and serving a 0.1.0 plugin's host imports.
//!
//! Owns: [`Instance`], one instantiated plugin of either version, whose
//! calls take and return the current types (a 0.1.0 plugin's arguments and
//! answers converted on the way); and the 0.1.0 `host` interface, whose
//! requests become current requests by the 0.1.0 rule — a `{{name}}` is a
//! credential only at the very start of the URL or as a whole header value
//! (`Bearer {{access_token}}`), and never when its text appears in what
//! the call was given or received (see `crate::http::Taint`); 0.1.0
//! requests follow redirects, as they always did.
//!
//! Never: lets a 0.1.0 plugin place a credential anywhere a 0.2.0 request
//! could not.

use wasmtime::Store;

use super::CallState;
use crate::contract::v0_1::{self, same, wit as old};
use crate::contract::{bindings, wit};
use wit::types::{Account, CallError, Context, Manifest, Post, Problem, Profile, Receipt};

/// One instantiated plugin.
pub enum Instance {
    V2(bindings::Plugin),
    V1(v0_1::bindings::Plugin),
}

type Call<T> = wasmtime::Result<Result<T, CallError>>;

impl Instance {
    pub async fn describe(&self, store: &mut Store<CallState>) -> wasmtime::Result<Manifest> {
        match self {
            Instance::V2(p) => p.call_describe(store).await,
            Instance::V1(p) => Ok(v0_1::manifest(&p.call_describe(store).await?)),
        }
    }

    pub async fn validate(
        &self,
        store: &mut Store<CallState>,
        post: &Post,
        account: Option<&Account>,
    ) -> wasmtime::Result<Vec<Problem>> {
        match self {
            Instance::V2(p) => p.call_validate(store, post, account).await,
            Instance::V1(p) => {
                let account: Option<old::types::Account> = account.map(same);
                let found = p
                    .call_validate(store, &same(post), account.as_ref())
                    .await?;
                Ok(same(&found))
            }
        }
    }

    pub async fn publish(
        &self,
        store: &mut Store<CallState>,
        ctx: &Context,
        post: &Post,
    ) -> Call<Receipt> {
        match self {
            Instance::V2(p) => p.call_publish(store, ctx, post).await,
            Instance::V1(p) => Ok(p
                .call_publish(store, &same(ctx), &same(post))
                .await?
                .map(|r| v0_1::receipt(&r))
                .map_err(|e| same(&e))),
        }
    }

    pub async fn profile(&self, store: &mut Store<CallState>, ctx: &Context) -> Call<Profile> {
        match self {
            Instance::V2(p) => p.call_profile(store, ctx).await,
            Instance::V1(p) => Ok(p
                .call_profile(store, &same(ctx))
                .await?
                .map(|r| same(&r))
                .map_err(|e| same(&e))),
        }
    }

    pub async fn find_post(
        &self,
        store: &mut Store<CallState>,
        ctx: &Context,
        post: &Post,
    ) -> Call<Option<Receipt>> {
        match self {
            Instance::V2(p) => p.call_find_post(store, ctx, post).await,
            Instance::V1(p) => Ok(p
                .call_find_post(store, &same(ctx), &same(post))
                .await?
                .map(|r| r.map(|r| v0_1::receipt(&r)))
                .map_err(|e| same(&e))),
        }
    }

    pub async fn check_receipt(
        &self,
        store: &mut Store<CallState>,
        ctx: &Context,
        receipt: &Receipt,
    ) -> Call<Receipt> {
        match self {
            Instance::V2(p) => p.call_check_receipt(store, ctx, receipt).await,
            // A 0.1.0 plugin only ever reports published posts.
            Instance::V1(_) => Ok(Ok(receipt.clone())),
        }
    }

    pub async fn list_identities(
        &self,
        store: &mut Store<CallState>,
        ctx: &Context,
    ) -> Call<Vec<wit::types::Identity>> {
        match self {
            Instance::V2(p) => p.call_list_identities(store, ctx).await,
            // 0.1.0 has no identities.
            Instance::V1(_) => Ok(Ok(Vec::new())),
        }
    }
}

/// A 0.1.0 request in the current model (see the module docs).
fn request(req: old::host::Request, state: &CallState) -> Result<wit::host::Request, String> {
    let (taint, plugin) = (&state.scope.taint, state.scope.plugin.as_str());
    let mut headers = Vec::new();
    for h in &req.headers {
        headers.push(wit::types::Field {
            name: h.name.clone(),
            value: crate::http::legacy_header(&h.value, taint, plugin)?,
        });
    }
    Ok(wit::host::Request {
        method: same(&req.method),
        url: crate::http::legacy_url(&req.url, taint, plugin)?,
        headers,
        body: body(req.body),
        credential: req.auth,
        class: req.class,
        follow_redirects: true,
    })
}

/// A 0.1.0 body as it is (moved, not copied: it may hold megabytes).
fn body(b: old::host::Body) -> wit::host::Body {
    use old::host::{Body as B1, BodyPart as P1};
    use wit::host::{Body, BodyPart, MediaSlice};
    let slice = |m: old::host::MediaSlice| MediaSlice {
        handle: m.handle,
        offset: m.offset,
        length: m.length,
    };
    match b {
        B1::Empty => Body::Empty,
        B1::Bytes(v) => Body::Bytes(v),
        B1::Media(m) => Body::Media(slice(m)),
        B1::Parts(parts) => Body::Parts(
            parts
                .into_iter()
                .map(|p| match p {
                    P1::Bytes(v) => BodyPart::Bytes(v),
                    P1::Media(m) => BodyPart::Media(slice(m)),
                })
                .collect(),
        ),
    }
}

impl old::types::Host for CallState {}

impl old::host::Host for CallState {
    async fn send(
        &mut self,
        req: old::host::Request,
    ) -> wasmtime::Result<Result<old::host::Response, old::host::HttpError>> {
        let req = match request(req, self) {
            Ok(r) => r,
            Err(m) => return Ok(Err(old::host::HttpError::NotSent(m))),
        };
        Ok(match self.send_now(req).await {
            Ok(r) => Ok(old::host::Response {
                status: r.status,
                headers: same(&r.headers),
                body: r.body,
            }),
            Err(e) => Err(same(&e)),
        })
    }

    async fn log(&mut self, level: old::host::Level, message: String) -> wasmtime::Result<()> {
        self.log_line(same(&level), message);
        Ok(())
    }

    async fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(super::now_millis())
    }

    async fn sleep_millis(&mut self, millis: u64) -> wasmtime::Result<()> {
        self.sleep(millis).await;
        Ok(())
    }
}

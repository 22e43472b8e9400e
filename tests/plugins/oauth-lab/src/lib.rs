//! Auth-only stand-ins for Reddit and Instagram (pick one with a cargo
//! feature). They publish nothing real; the credentials tests use them to
//! drive the host's token machinery through these platforms' quirks.

use outreach_sdk::prelude::*;

struct Lab;

#[cfg(feature = "instagram")]
const ID: &str = "instagram";
#[cfg(not(feature = "instagram"))]
const ID: &str = "reddit";

impl Platform for Lab {
    fn manifest() -> Manifest {
        base_manifest(cfg!(feature = "instagram"))
    }

    fn publish(_ctx: &Context, _post: &Post) -> Result<Receipt, CallError> {
        Err(CallError::Rejected("the lab plugins do not publish".into()))
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        let v = Request::get(ctx.url("api", "/me")?)
            .authed()
            .send()?
            .json_ok()?;
        Ok(Profile {
            id: v["id"].as_str().unwrap_or_default().into(),
            name: v["name"].as_str().unwrap_or_default().into(),
            handle: None,
            picture: None,
            url: None,
        })
    }
}

/// The Reddit-like manifest, or the Instagram-like one.
fn base_manifest(instagram: bool) -> Manifest {
    let shape = TokenShape::default();
    Manifest {
        id: ID.into(),
        name: if instagram {
            "Instagram (lab)"
        } else {
            "Reddit (lab)"
        }
        .into(),
        version: "0.0.1".into(),
        auth: AuthInfo {
            kind: AuthKind::Oauth2,
            scopes: if instagram {
                vec![
                    "instagram_business_basic".into(),
                    "instagram_business_content_publish".into(),
                ]
            } else {
                vec!["identity".into(), "submit".into()]
            },
            scope_separator: if instagram { ",".into() } else { " ".into() },
            client_auth: if instagram {
                ClientAuth::Body
            } else {
                ClientAuth::Basic
            },
            authorize_params: if instagram {
                vec![]
            } else {
                template_fields(&[("duration", "permanent")])
            },
            token_params: vec![],
            token_response: shape.clone(),
            refresh: if instagram {
                RefreshStyle::Custom(CustomExchange {
                    method: HttpMethod::Get,
                    url: template("refresh"),
                    query: template_fields(&[
                        ("grant_type", "ig_refresh_token"),
                        ("access_token", "{{access_token}}"),
                    ]),
                    headers: vec![],
                    body: ExchangeBody::None,
                    response: shape,
                })
            } else {
                RefreshStyle::Standard
            },
            pkce: PkceMethod::S256,
            access_token_lifetime: if instagram { 60 * 86_400 } else { 3600 },
            refresh_token_lifetime: 0,
            placement: vec![if instagram {
                CredentialPlacement::Query("access_token".into())
            } else {
                CredentialPlacement::Bearer
            }],
            // Instagram: the short-lived token from the code exchange is
            // traded for a long-lived one with the app secret.
            after_connect: if instagram {
                vec![CustomExchange {
                    method: HttpMethod::Get,
                    url: template("exchange"),
                    query: template_fields(&[
                        ("grant_type", "ig_exchange_token"),
                        ("client_secret", "{{client_secret}}"),
                        ("access_token", "{{access_token}}"),
                    ]),
                    headers: vec![],
                    body: ExchangeBody::None,
                    response: TokenShape {
                        refresh_token: String::new(),
                        scope: String::new(),
                        ..TokenShape::default()
                    },
                }]
            } else {
                vec![]
            },
            identities: None,
            dynamic_registration: false,
            login: None,
        },
        endpoints: {
            let mut e = vec![
                Endpoint {
                    name: "authorize".into(),
                    url: "https://lab.example/authorize".into(),
                },
                Endpoint {
                    name: "token".into(),
                    url: "https://lab.example/token".into(),
                },
                Endpoint {
                    name: "api".into(),
                    url: "https://lab.example".into(),
                },
            ];
            if instagram {
                e.push(Endpoint {
                    name: "refresh".into(),
                    url: "https://lab.example/refresh_access_token".into(),
                });
                e.push(Endpoint {
                    name: "exchange".into(),
                    url: "https://lab.example/access_token".into(),
                });
            }
            e
        },
        hosts: vec![],
        rate_limits: vec![],
        rate_limit_headers: None,
        // Each platform's own content rules: Reddit needs a title;
        // Instagram cannot post text alone and fetches media from a public
        // URL (the lab's video cap is 1 MB so tests stay small).
        content: if instagram {
            ContentRules {
                max_length: 2200,
                media_required: true,
                media: vec![
                    MediaRule {
                        kind: MediaKind::Image,
                        max_count: 10,
                        max_bytes: 8 << 20,
                        mime_types: vec!["image/jpeg".into()],
                        needs_public_url: true,
                    },
                    MediaRule {
                        kind: MediaKind::Video,
                        max_count: 1,
                        max_bytes: 1 << 20,
                        mime_types: vec!["video/mp4".into(), "video/quicktime".into()],
                        needs_public_url: true,
                    },
                ],
                ..Default::default()
            }
        } else {
            ContentRules {
                max_length: 40_000,
                title_required: true,
                max_title_length: 300,
                ..Default::default()
            }
        },
        settings: vec![],
        post_fields: vec![],
        idempotent_publish: false,
    }
}

outreach_sdk::export_platform!(Lab);

//! Auth-only stand-ins for Reddit, Instagram and Facebook Pages, a
//! session-login platform like Hacker News and one that needs no
//! credential at all (pick one with a cargo feature). The credentials
//! tests use them to drive the host's token machinery through these
//! platforms' quirks; only the session and anonymous ones publish.

use outreach_sdk::prelude::*;

struct Lab;

#[cfg(feature = "instagram")]
const ID: &str = "instagram";
#[cfg(not(feature = "instagram"))]
const ID: &str = "reddit";

impl Platform for Lab {
    fn manifest() -> Manifest {
        if cfg!(feature = "facebook") {
            facebook_manifest()
        } else if cfg!(feature = "session") {
            session_manifest()
        } else if cfg!(feature = "anonymous") {
            anonymous_manifest()
        } else {
            base_manifest(cfg!(feature = "instagram"))
        }
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        if cfg!(feature = "session") {
            return session_publish(ctx, post);
        }
        if cfg!(feature = "anonymous") {
            // Nothing to log in with: the user finishes it on a page.
            return Ok(Receipt {
                state: ReceiptState::HandedToUser,
                id: String::new(),
                url: Some(query_url(
                    "https://lab.example/submitlink",
                    &[
                        ("t", post.title.as_deref().unwrap_or("")),
                        ("u", post.link.as_deref().unwrap_or("")),
                    ],
                )),
            });
        }
        Err(CallError::Rejected("the lab plugins do not publish".into()))
    }

    fn list_identities(ctx: &Context) -> Result<Vec<Identity>, CallError> {
        let v = Request::get(ctx.url("api", "/me/accounts?fields=id,name")?)
            .authed()
            .send()?
            .json_ok()?;
        Ok(v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| Identity {
                id: p["id"].as_str().unwrap_or_default().into(),
                name: p["name"].as_str().unwrap_or_default().into(),
                picture: None,
                kind: "page".into(),
                extra_scopes: vec![],
            })
            .collect())
    }

    fn profile(ctx: &Context) -> Result<Profile, CallError> {
        if cfg!(feature = "anonymous") {
            return Ok(Profile {
                id: "anonymous".into(),
                name: "Anonymous".into(),
                handle: None,
                picture: None,
                url: None,
            });
        }
        let res = Request::get(ctx.url("api", "/me")?).authed().send()?;
        // A session that ended sends the browser to the login page.
        if res.status == 302 {
            return Err(CallError::AuthExpired("the session ended".into()));
        }
        let v = res.json_ok()?;
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
            refresh_min_age: 0,
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

/// Facebook Pages' auth: a code exchange, then `fb_exchange_token` for a
/// long-lived user token, then one account per page the user picks, each
/// with its page token; tokens go in the query with `appsecret_proof`.
fn facebook_manifest() -> Manifest {
    let mut m = base_manifest(true);
    m.id = "facebook".into();
    m.name = "Facebook Pages (lab)".into();
    m.auth.scopes = vec!["pages_show_list".into(), "pages_manage_posts".into()];
    m.auth.refresh = RefreshStyle::None;
    m.auth.access_token_lifetime = 3600;
    m.auth.placement = vec![
        CredentialPlacement::Query("access_token".into()),
        CredentialPlacement::Proof("appsecret_proof".into()),
    ];
    let no_expiry = TokenShape {
        refresh_token: String::new(),
        expiry: String::new(),
        expiry_format: ExpiryFormat::Never,
        scope: String::new(),
        ..TokenShape::default()
    };
    m.auth.after_connect = vec![CustomExchange {
        method: HttpMethod::Get,
        url: template("exchange"),
        query: template_fields(&[
            ("grant_type", "fb_exchange_token"),
            ("client_id", "{{client_id}}"),
            ("client_secret", "{{client_secret}}"),
            ("fb_exchange_token", "{{access_token}}"),
        ]),
        headers: vec![],
        body: ExchangeBody::None,
        response: TokenShape {
            refresh_token: String::new(),
            scope: String::new(),
            ..TokenShape::default()
        },
    }];
    let mut page = vec![TextPart::Text("api".into())];
    page.extend(template("/{{setting:page_id}}"));
    m.auth.identities = Some(IdentityChoice {
        setting: "page_id".into(),
        exchange: Some(CustomExchange {
            method: HttpMethod::Get,
            url: page,
            query: template_fields(&[
                ("fields", "access_token"),
                ("access_token", "{{access_token}}"),
                ("appsecret_proof", "{{appsecret_proof}}"),
            ]),
            headers: vec![],
            body: ExchangeBody::None,
            response: no_expiry,
        }),
        self_allowed: false,
    });
    m.endpoints.retain(|e| e.name != "refresh");
    for e in &mut m.endpoints {
        if e.name == "exchange" {
            e.url = "https://lab.example/oauth/access_token".into();
        }
    }
    m.settings = vec![Setting {
        name: "page_id".into(),
        description: "The page this account posts as".into(),
        required: false,
        default_value: None,
        is_host: false,
    }];
    m
}

/// A login form whose session is a cookie (Hacker News): the user's
/// username and password become the `user` cookie; a session that ends is
/// renewed by logging in again.
fn session_manifest() -> Manifest {
    let mut m = base_manifest(false);
    let cookie = TokenShape {
        access_token: "cookie:user".into(),
        refresh_token: String::new(),
        expiry: String::new(),
        expiry_format: ExpiryFormat::Never,
        refresh_expiry: String::new(),
        scope: String::new(),
        error: String::new(),
    };
    m.id = "hn".into();
    m.name = "Hacker News (lab)".into();
    m.auth = AuthInfo {
        kind: AuthKind::SessionLogin,
        refresh: RefreshStyle::Relogin,
        placement: vec![CredentialPlacement::Cookie("user".into())],
        token_response: cookie.clone(),
        login: Some(CustomExchange {
            method: HttpMethod::Post,
            url: template("login"),
            query: vec![],
            headers: vec![],
            body: ExchangeBody::Form(template_fields(&[
                ("acct", "{{username}}"),
                ("pw", "{{password}}"),
                ("goto", "news"),
            ])),
            response: cookie,
        }),
        ..AuthInfo::static_credential(AuthKind::SessionLogin, CredentialPlacement::Bearer)
    };
    m.endpoints = vec![
        Endpoint {
            name: "login".into(),
            url: "https://lab.example/login".into(),
        },
        Endpoint {
            name: "api".into(),
            url: "https://lab.example".into(),
        },
    ];
    m.content.title_required = true;
    m
}

/// Submit as Hacker News does: a form page holding a one-time `fnid` (and
/// setting a cookie the submit needs), then the form, answered by a
/// redirect to the new item.
fn session_publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
    let page = Request::get(ctx.url("api", "/submit")?).authed().send()?;
    if page.status == 302 {
        return Err(CallError::AuthExpired("the session ended".into()));
    }
    let html = page.text();
    let fnid = html
        .split("name=\"fnid\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| CallError::Transient("the submit page has no fnid".into()))?
        .to_string();
    let res = Request::post(ctx.url("api", "/r")?)
        .form(&[
            ("fnid", fnid.as_str()),
            ("title", post.title.as_deref().unwrap_or("")),
            ("url", post.link.as_deref().unwrap_or("")),
            ("text", post.text.as_str()),
        ])
        .authed()
        .class("publish")
        .send()?;
    let to = res.header("location").unwrap_or_default().to_string();
    match to.strip_prefix("item?id=") {
        Some(id) if res.status == 302 => Ok(Receipt::published(
            id.to_string(),
            Some(format!("https://lab.example/item?id={id}")),
        )),
        _ => Err(CallError::Rejected(format!(
            "the submit was not accepted (HTTP {}): {}",
            res.status,
            res.text()
        ))),
    }
}

/// A platform that needs no credential: the user finishes each post on a
/// page the plugin hands over.
fn anonymous_manifest() -> Manifest {
    let mut m = base_manifest(false);
    m.id = "anon".into();
    m.name = "Anonymous (lab)".into();
    m.auth = AuthInfo::static_credential(AuthKind::None, CredentialPlacement::Bearer);
    m.auth.placement = vec![];
    m.endpoints = vec![Endpoint {
        name: "api".into(),
        url: "https://lab.example".into(),
    }];
    m
}

outreach_sdk::export_platform!(Lab);

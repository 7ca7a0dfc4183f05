use lightning_ops::{
    plan::{Action, Fees, Known, Move, NO_DESTINATION, Observed, channel_id, plan, plan_with},
    policy,
};

const EXAMPLE: &str = include_str!("../../policy.example.toml");
const HUB: &str = "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad";
const OTHER: &str = "02aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn scid(block: u64, tx: u64, out: u64) -> u64 {
    block << 40 | tx << 16 | out
}

const DEFAULT: Fees = Fees {
    base_fee_msat: 1000,
    fee_rate_ppm: 100,
    min_htlc_msat: 1000,
    max_htlc_msat: 500_000_000,
    time_lock_delta: 80,
    inbound_base_fee_msat: 0,
    inbound_fee_ppm: 0,
};

#[test]
fn channel_ids_print_as_block_tx_output() {
    assert_eq!(channel_id(scid(700_000, 1_234, 1)), "700000x1234x1");
}

/// The example policy against three channels; every expected value is computed by hand in the
/// comments, not by the code under test.
#[test]
fn the_plan_follows_the_policy_with_hand_computed_values() {
    let policy = policy::parse(EXAMPLE).unwrap();
    let observed = vec![
        // 1x1x0: a hub peer (group "hubs", proportional 50..1500 ppm), 80% local.
        Observed {
            chan_id: scid(1, 1, 0),
            remote_pubkey: HUB.into(),
            local_balance_msat: 800_000,
            remote_balance_msat: 200_000,
            active: true,
            local_policy: DEFAULT,
        },
        // 2x1x0: already on the default policy, balanced; the policy asks to close it.
        Observed {
            chan_id: scid(2, 1, 0),
            remote_pubkey: OTHER.into(),
            local_balance_msat: 500_000,
            remote_balance_msat: 500_000,
            active: true,
            local_policy: DEFAULT,
        },
        // 3x2x1: inactive, our side empty, on an old policy.
        Observed {
            chan_id: scid(3, 2, 1),
            remote_pubkey: OTHER.into(),
            local_balance_msat: 0,
            remote_balance_msat: 1_000_000,
            active: false,
            local_policy: Fees {
                fee_rate_ppm: 1,
                ..DEFAULT
            },
        },
    ];
    let actions = plan(&policy, &observed);
    let expected = vec![
        // 1500 - floor(1450 * 800_000 / 1_000_000) = 1500 - 1160 = 340 ppm; the group's base,
        // HTLC range and CLTV.
        Action::SetPolicy {
            channel_id: "1x1x0".into(),
            from: DEFAULT,
            to: Fees {
                base_fee_msat: 0,
                fee_rate_ppm: 340,
                min_htlc_msat: 1000,
                max_htlc_msat: 1_000_000_000,
                time_lock_delta: 40,
                ..Fees::default()
            },
            source: "group:hubs".into(),
        },
        // Band 30-70%, observed 80%: too much local. The destination would be the active
        // channel with the most room below half its capacity: 2x1x0 is at exactly 50% (room
        // 0) and 3x2x1 is inactive, so there is none.
        Action::Rebalance {
            channel_id: "1x1x0".into(),
            local_pct: 80,
            min_pct: 30,
            max_pct: 70,
            liquidity: None,
            why_not: Some(NO_DESTINATION),
        },
        Action::SetPolicy {
            channel_id: "3x2x1".into(),
            from: Fees {
                fee_rate_ppm: 1,
                ..DEFAULT
            },
            to: DEFAULT,
            source: "default".into(),
        },
        Action::Flag {
            channel_id: "3x2x1".into(),
            flag: "inactive",
        },
        Action::Flag {
            channel_id: "3x2x1".into(),
            flag: "depleted_on_one_side",
        },
        // The open intent's peer has no channel yet; the close intent's channel exists.
        Action::Open {
            peer: "02d0139ce7427d1c21d3b1ac1d4f8d23d3e06e5d0bd62b3c22e34b6d2e3e8d803d".into(),
            capacity_sat: 2_000_000,
        },
        Action::Close {
            channel_id: "2x1x0".into(),
            force: false,
        },
    ];
    assert_eq!(actions, expected);
    // Deterministic: the order of observation does not matter.
    let mut reversed = observed.clone();
    reversed.reverse();
    assert_eq!(plan(&policy, &reversed), expected);
    // Applied: once the node matches, the policy actions disappear (the rest needs liquidity work).
    let converged: Vec<Observed> = observed
        .iter()
        .map(|c| {
            let to = expected.iter().find_map(|a| match a {
                Action::SetPolicy {
                    channel_id: id, to, ..
                } if *id == channel_id(c.chan_id) => Some(*to),
                _ => None,
            });
            Observed {
                local_policy: to.unwrap_or(c.local_policy),
                ..c.clone()
            }
        })
        .collect();
    assert!(
        !plan(&policy, &converged)
            .iter()
            .any(|a| matches!(a, Action::SetPolicy { .. }))
    );
    // Text form for operators.
    assert_eq!(
        expected[1].to_string(),
        "rebalance 1x1x0: local side 80% is outside 30-70%: no active channel has room below its own band"
    );
}

const OTHER2: &str = "02bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn liquidity_policy() -> policy::Policy {
    policy::parse(&format!(
        r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 1000
fee_ppm = 100
inbound_base_fee_msat = -500
inbound_fee_ppm = -50
min_htlc_msat = 1000
max_htlc_msat = 500000000
time_lock_delta = 80

[[channels]]
channel_id = "1x1x0"
local_balance_min_pct = 40
local_balance_max_pct = 60

[rebalance]
max_fee_ppm = 300
budget_msat_per_day = 1000000

[[intents.open]]
peer = "{OTHER2}"
capacity_sat = 100000

[[intents.close]]
channel_id = "4x1x0"
force = true
"#
    ))
    .unwrap()
}

fn chan(chan_id: u64, peer: &str, capacity: u64, local: u64) -> Observed {
    Observed {
        chan_id,
        remote_pubkey: peer.into(),
        local_balance_msat: local,
        remote_balance_msat: capacity - local,
        active: true,
        local_policy: DEFAULT,
    }
}

/// Inbound fees, a rebalance's move and fee limit, and the intents, each computed by hand; then
/// what is under way (`Known`) takes channels and peers out of the plan.
#[test]
fn the_plan_moves_liquidity_sets_inbound_fees_and_leaves_out_what_is_under_way() {
    let policy = liquidity_policy();
    let (a, b, c, d) = (scid(1, 1, 0), scid(2, 1, 0), scid(3, 1, 0), scid(4, 1, 0));
    let observed = vec![
        // 10% local, band 40-60%: the middle is 1_000_000 * 100 / 200 = 500_000; needs 400_000.
        chan(a, HUB, 1_000_000, 100_000),
        // No band: excess above half = 1_800_000 - 1_000_000 = 800_000.
        chan(b, OTHER, 2_000_000, 1_800_000),
        // No band: excess 900_000 - 500_000 = 400_000.
        chan(c, OTHER, 1_000_000, 900_000),
        // No band: excess 450_000, but the policy closes it (force): no source, no new policy.
        chan(d, OTHER, 1_000_000, 950_000),
    ];
    let to = Fees {
        inbound_base_fee_msat: -500,
        inbound_fee_ppm: -50,
        ..DEFAULT
    };
    let set = |id: &str| Action::SetPolicy {
        channel_id: id.into(),
        from: DEFAULT,
        to,
        source: "default".into(),
    };
    let rebalance_from = |source: u64| Action::Rebalance {
        channel_id: "1x1x0".into(),
        local_pct: 10,
        min_pct: 40,
        max_pct: 60,
        // min(400_000 needed, the source's excess); fee limit ceil(400_000 * 300 / 1e6) = 120.
        liquidity: Some(Move {
            out_chan_id: source,
            in_chan_id: a,
            amount_msat: 400_000,
            fee_limit_msat: Some(120),
        }),
        why_not: None,
    };
    let open = Action::Open {
        peer: OTHER2.into(),
        capacity_sat: 100_000,
    };
    let close = Action::Close {
        channel_id: "4x1x0".into(),
        force: true,
    };
    // Nothing under way: the largest excess (2x1x0) is the source.
    assert_eq!(
        plan(&policy, &observed),
        vec![
            set("1x1x0"),
            rebalance_from(b),
            set("2x1x0"),
            set("3x1x0"),
            open.clone(),
            close.clone()
        ]
    );
    assert_eq!(
        set("1x1x0").to_string(),
        "set policy 1x1x0 (default): base 1000 -> 1000 msat, rate 100 -> 100 ppm, htlc 1000..500000000 -> 1000..500000000 msat, cltv 80 -> 80, inbound 0/0 -> -500/-50 msat/ppm"
    );
    assert_eq!(
        rebalance_from(b).to_string(),
        "rebalance 1x1x0: local side 10% is outside 40-60%: move 400000 msat out over 2x1x0 and back in over 1x1x0, fee limit 120 msat"
    );
    // 2x1x0 has a rebalance under way: 3x1x0 (excess 400_000) is the source instead, not
    // 4x1x0 (excess 450_000), which the policy closes.
    let busy = Known {
        rebalancing: [b].into(),
        ..Known::default()
    };
    assert_eq!(
        plan_with(&policy, &observed, &busy),
        vec![
            set("1x1x0"),
            rebalance_from(c),
            set("2x1x0"),
            set("3x1x0"),
            open.clone(),
            close
        ]
    );
    // 4x1x0 is closing and an open to the peer is under way: neither is proposed again.
    let under_way = Known {
        opening: [OTHER2.to_owned()].into(),
        closing: [d].into(),
        ..Known::default()
    };
    assert_eq!(
        plan_with(&policy, &observed, &under_way),
        vec![set("1x1x0"), rebalance_from(b), set("2x1x0"), set("3x1x0")]
    );
    // A closing channel gets no policy change and is no source even with the most excess.
    let mut closing_leftover = observed.clone();
    closing_leftover[3].local_policy = Fees {
        fee_rate_ppm: 1,
        ..DEFAULT
    };
    let known = Known {
        rebalancing: [b].into(),
        closing: [d].into(),
        ..Known::default()
    };
    assert_eq!(
        plan_with(&policy, &closing_leftover, &known),
        vec![
            set("1x1x0"),
            rebalance_from(c),
            set("2x1x0"),
            set("3x1x0"),
            open.clone()
        ]
    );
    // Once converged, nothing is left (the rebalance brought 1x1x0 to 50%).
    let converged: Vec<Observed> = vec![
        Observed {
            local_policy: to,
            ..chan(a, HUB, 1_000_000, 500_000)
        },
        Observed {
            local_policy: to,
            ..chan(b, OTHER, 2_000_000, 1_400_000)
        },
        Observed {
            local_policy: to,
            ..chan(c, OTHER, 1_000_000, 900_000)
        },
    ];
    let done = Known {
        opening: [OTHER2.to_owned()].into(),
        ..Known::default()
    };
    assert_eq!(plan_with(&policy, &converged, &done), vec![]);
}

#[tokio::test]
async fn the_plan_route_reads_channels_through_the_custody_channel_and_changes_nothing() {
    use axum::body::Body;
    use clap::Parser;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::{sync::Arc, time::Duration};
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, EXAMPLE).unwrap();
    let config = |with_policy: bool| {
        let mut args = vec![
            "lightning-ops".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                dir.path().join("ops.db").display()
            ),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("lightning-ops").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
        ];
        if with_policy {
            args.push(format!("--policy-file={}", policy_file.display()));
        }
        lightning_ops::Config::parse_from(args)
    };
    let observed = vec![Observed {
        chan_id: scid(3, 2, 1),
        remote_pubkey: OTHER.into(),
        local_balance_msat: 0,
        remote_balance_msat: 10,
        active: false,
        local_policy: DEFAULT,
    }];
    let fake = crate::fake::Fake::new(observed).dyn_channels();
    let clock: Arc<dyn oa_service::Clock> = Arc::new(oa_service::SystemClock);
    let reader = ring
        .operator_token("lightning-ops", &["ops:read"], Duration::from_secs(60))
        .unwrap();
    let post = |router: axum::Router, token: Option<&str>, body: &'static str| {
        let mut req = Request::post("/v1/ops/plan").header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        async move {
            let resp = router
                .oneshot(req.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let v: serde_json::Value =
                serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes())
                    .unwrap_or_default();
            (status, v)
        }
    };
    let router = lightning_ops::build_with(&config(true), clock.clone(), Some(fake.clone()))
        .await
        .unwrap()
        .router;
    let (status, v) = post(router.clone(), Some(&reader), "{}").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let kinds: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["flag", "flag", "open"], "{v}");
    assert_eq!(v["actions"][0]["description"], "flag 3x2x1: inactive");
    assert_eq!(
        post(router.clone(), None, "{}").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, v) = post(router.clone(), Some(&reader), r#"{"apply":true}"#).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    let router = lightning_ops::build_with(&config(false), clock, Some(fake))
        .await
        .unwrap()
        .router;
    let (status, v) = post(router, Some(&reader), "{}").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_CONFIGURED"))
    );
}

//! Signed firmware releases: keys, packing, and the gateway's checks on
//! upload (tampered, untrusted, wrong board, downgrade).

mod common;

use common::*;

#[test]
fn only_intact_releases_signed_by_a_trusted_key_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().to_string();
    let config = dir.path().join("sites.toml");

    assert_eq!(
        fleet(&config, &["keys", "generate", "--out", &p("release-keys")]).0,
        0
    );
    let (code, _, err) = fleet(&config, &["keys", "generate", "--out", &p("release-keys")]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        fleet(&config, &["keys", "generate", "--out", &p("stranger")]).0,
        0
    );

    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(format!(
                "[ota]\ntrusted_keys = [\"{}\"]\n",
                p("release-keys/signing.pub")
            )),
            ..Default::default()
        },
    );
    add_site(&config, "arena", &gateway);

    // A 1 MiB image.
    let image: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(p("image.bin"), &image).unwrap();
    let pack = |version: &str, key: &str, out: &str| {
        fleet(
            &config,
            &[
                "ota",
                "pack",
                "--version",
                version,
                "--board",
                "pico-w",
                "--key",
                &p(key),
                &p("image.bin"),
                "-o",
                &p(out),
            ],
        )
    };
    assert_eq!(pack("1.1.0", "release-keys/signing.key", "good.pota").0, 0);
    let (code, out, err) = fleet(
        &config,
        &["ota", "upload", &p("good.pota"), "--site", "arena"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("uploaded pico-w 1.1.0"), "{out}");
    let (code, listed, _) = fleet(&config, &["ota", "releases", "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        (
            listed[0]["version"].as_str(),
            listed[0]["size"].as_u64(),
            listed[0]["site"].as_str()
        ),
        (Some("1.1.0"), Some(1 << 20), Some("arena"))
    );

    let refused = |file: &str, extra: &[&str]| {
        let mut args = vec!["ota", "upload", file, "--site", "arena"];
        args.extend_from_slice(extra);
        let (code, _, err) = fleet(&config, &args);
        assert_ne!(code, 0, "{file} must be refused");
        err
    };
    // Tampered: one byte of the image changed after signing.
    let mut tampered = std::fs::read(p("good.pota")).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    std::fs::write(p("tampered.pota"), &tampered).unwrap();
    assert!(refused(&p("tampered.pota"), &[]).contains("tampered"));
    // Signed by a key the gateway does not trust.
    assert_eq!(pack("1.2.0", "stranger/signing.key", "stranger.pota").0, 0);
    assert!(refused(&p("stranger.pota"), &[]).contains("not trusted"));
    // A downgrade, unless explicitly allowed.
    assert_eq!(pack("1.0.5", "release-keys/signing.key", "old.pota").0, 0);
    assert!(refused(&p("old.pota"), &[]).contains("older than 1.1.0"));
    assert_eq!(
        fleet(
            &config,
            &[
                "ota",
                "upload",
                &p("old.pota"),
                "--site",
                "arena",
                "--allow-downgrade"
            ]
        )
        .0,
        0
    );
    // A different build under an existing version.
    std::fs::write(p("image.bin"), &image[..1000]).unwrap();
    assert_eq!(
        pack("1.1.0", "release-keys/signing.key", "rebuild.pota").0,
        0
    );
    assert!(refused(&p("rebuild.pota"), &[]).contains("different contents"));
    // Not an artifact at all, and ELF files instead of images.
    assert!(refused(&p("image.bin"), &[]).contains("not a Pressline OTA artifact"));
    std::fs::write(p("fw.elf"), b"\x7fELF....").unwrap();
    let (code, _, err) = fleet(
        &config,
        &[
            "ota",
            "pack",
            "--version",
            "2.0.0",
            "--key",
            &p("release-keys/signing.key"),
            &p("fw.elf"),
            "-o",
            &p("x.pota"),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("objcopy"), "{err}");

    // A board the gateway does not serve, even when properly signed.
    let seed_hex = std::fs::read_to_string(p("release-keys/signing.key")).unwrap();
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&seed_hex.trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let key = ed25519_dalek_key(&seed);
    let other_board = pressline_protocol::ota::pack(
        pressline_protocol::FirmwareVersion::parse("3.0.0").unwrap(),
        "esp32-c3",
        b"image",
        &key,
    )
    .unwrap();
    match ureq::post(&format!("{}/api/v1/ota/releases", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_bytes(&other_board)
    {
        Err(ureq::Error::Status(422, r)) => assert!(r
            .into_string()
            .unwrap()
            .contains("not one this gateway serves")),
        other => panic!("expected 422 for an unknown board, got {other:?}"),
    }
    let (_, listed, _) = fleet(&config, &["ota", "releases"]);
    assert!(
        listed.contains("1.1.0")
            && listed.contains("1.0.5")
            && !listed.contains("1.2.0")
            && !listed.contains("3.0.0"),
        "{listed}"
    );
}

fn ed25519_dalek_key(seed: &[u8]) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(seed.try_into().unwrap())
}

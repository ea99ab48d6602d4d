//! The same HF transformers fixtures in a real browser: the GPU kernels through Chromium's WebGPU
//! (SwiftShader in CI), with the tolerances of the native suite (tests/checks), and the JS API's
//! typed errors. Run with `wasm-pack test --headless --chrome -- --test web` (flags in
//! webdriver.json).
#![cfg(target_arch = "wasm32")]

mod checks;

use lorb::{Backend, BackendKind, ClsHead, Model, Scorer, TextEncoder};
use std::sync::Arc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

struct Fixture {
    config: &'static [u8],
    weights: &'static [u8],
    tokenizer: &'static [u8],
    head: &'static [u8],
    expected: &'static str,
}

macro_rules! fixture {
    ($arch:literal) => {
        Fixture {
            config: include_bytes!(concat!("fixtures/", $arch, "/config.json")),
            weights: include_bytes!(concat!("fixtures/", $arch, "/model.safetensors")),
            tokenizer: include_bytes!(concat!("fixtures/", $arch, "/tokenizer.json")),
            head: include_bytes!(concat!("fixtures/", $arch, "/cls_head.safetensors")),
            expected: include_str!(concat!("fixtures/", $arch, "/expected.json")),
        }
    };
}

async fn check(arch: &str, f: Fixture) {
    let model = Arc::new(Model::from_bytes(f.config, f.weights).unwrap());
    let enc = TextEncoder::from_bytes(f.tokenizer, &model.config).unwrap();
    let head = ClsHead::from_safetensors(f.head, model.config.hidden).unwrap();
    let backend = Backend::new(model, BackendKind::Gpu).await.expect("WebGPU (run Chromium with --enable-unsafe-webgpu)");
    let mut scorer = Scorer::new(enc, backend, Some(head));
    let exp: serde_json::Value = serde_json::from_str(f.expected).unwrap();
    checks::check_scorer(arch, &mut scorer, &exp).await;
}

#[wasm_bindgen_test]
async fn bert_on_webgpu_matches_transformers() {
    check("bert", fixture!("bert")).await;
}

#[wasm_bindgen_test]
async fn roberta_on_webgpu_matches_transformers() {
    check("roberta", fixture!("roberta")).await;
}

#[wasm_bindgen_test]
async fn distilbert_on_webgpu_matches_transformers() {
    check("distilbert", fixture!("distilbert")).await;
}

fn bytes(b: &[u8]) -> JsValue {
    js_sys::Uint8Array::from(b).into()
}

fn opts(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn kind_of(e: JsValue) -> String {
    js_sys::Reflect::get(&e, &"kind".into()).unwrap().as_string().unwrap_or_default()
}

/// Load failures are JS exceptions with a message and a `kind`.
#[wasm_bindgen_test]
async fn load_failures_are_typed_exceptions() {
    let f = fixture!("bert");
    let base = |weights: JsValue, tokenizer: JsValue| opts(&[("config", bytes(f.config)), ("weights", weights), ("tokenizer", tokenizer), ("backend", "cpu".into())]);
    let e = lorb::wasm::Rescorer::load(base(bytes(&f.weights[..f.weights.len() / 2]), bytes(f.tokenizer))).await.err().unwrap();
    assert_eq!(kind_of(e), "weights");
    let e = lorb::wasm::Rescorer::load(base(bytes(f.weights), bytes(b"{not json"))).await.err().unwrap();
    assert_eq!(kind_of(e), "tokenizer");
    let e = lorb::wasm::Rescorer::load(base(bytes(f.weights), "/no/such/tokenizer.json".into())).await.err().unwrap();
    assert_eq!(kind_of(e.clone()), "io");
    assert!(e.dyn_ref::<js_sys::Error>().unwrap().message().as_string().unwrap().contains("404"));
    let e = lorb::wasm::Rescorer::load(opts(&[("config", bytes(f.config))])).await.err().unwrap();
    assert_eq!(kind_of(e), "input");
}

/// The JS API rescoring a list on WebGPU agrees with the library's CLS scores.
#[wasm_bindgen_test]
async fn rescorer_api_rescores_a_list() {
    let f = fixture!("bert");
    let mut r = lorb::wasm::Rescorer::load(opts(&[
        ("config", bytes(f.config)),
        ("weights", bytes(f.weights)),
        ("tokenizer", bytes(f.tokenizer)),
        ("head", bytes(f.head)),
        ("backend", "gpu".into()),
    ]))
    .await
    .unwrap();
    let exp: serde_json::Value = serde_json::from_str(f.expected).unwrap();
    let s = &exp["sentences"];
    let nbest = serde_json::json!({"utt": "u1", "ref": s[0]["text"], "hyps": [{"text": s[1]["text"], "score": -1.0}, {"text": s[0]["text"], "score": -1.5}]});
    let nb = nbest.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap();
    let out: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(nb, opts(&[("weight", 2.0.into())])).await.unwrap()).unwrap();
    let hyps = out["hyps"].as_array().unwrap();
    for h in hyps {
        let i = if h["text"] == s[0]["text"] { 0 } else { 1 };
        let want = s[i]["cls_score"].as_f64().unwrap();
        assert!((h["s2"].as_f64().unwrap() - want).abs() <= 1e-4, "{h}");
        assert!((h["total"].as_f64().unwrap() - (h["s1"].as_f64().unwrap() + 2.0 * want)).abs() <= 1e-3);
    }
    assert!(hyps[0]["total"].as_f64() >= hyps[1]["total"].as_f64());
    assert_eq!(out["firstPassErrors"].as_u64().is_some(), true);
    // s1 as an expression over the hypotheses' fields, as the command line's --s1; a field a
    // hypothesis lacks is an input error naming the list.
    let fields = serde_json::json!({"utt": "u2", "hyps": [{"text": s[1]["text"], "score": -1.0, "lm": -4.0}, {"text": s[0]["text"], "score": -1.5, "lm": -2.0}]});
    let js = |v: &serde_json::Value| v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap();
    let out: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(js(&fields), opts(&[("s1", "0.5*score+0.25*lm".into())])).await.unwrap()).unwrap();
    for h in out["hyps"].as_array().unwrap() {
        let want = if h["text"] == s[0]["text"] { 0.5 * -1.5 + 0.25 * -2.0 } else { 0.5 * -1.0 + 0.25 * -4.0 };
        assert_eq!(h["s1"].as_f64().unwrap(), want, "{h}");
    }
    let e = r.rescore(js(&fields), opts(&[("s1", "score+ctc".into())])).await.err().unwrap();
    assert_eq!(kind_of(e), "input");
    let caps: serde_json::Value = serde_wasm_bindgen::from_value(r.capabilities().unwrap()).unwrap();
    assert_eq!(caps["gpu"], true);
    // The user's words: personalising with no training on a corrected transcript with a rare
    // word ("quilter") picks the later hypothesis that uses it, and later `rescore` calls add
    // the same boost (`lexiconWeight` 0 turns it off; a non-number is an input error).
    let adapt = serde_json::json!([{"utt": "7-8-0000", "ref": "mister quilter spoke", "hyps": [{"text": "mister quilter spoke", "score": -1.0}]}]);
    let later = serde_json::json!({"utt": "7-8-0001", "ref": "quilter came", "hyps": [{"text": "quilder came", "score": -1.0}, {"text": "quilter came", "score": -1.5}]});
    let p: serde_json::Value = serde_wasm_bindgen::from_value(
        r.personalize(js(&adapt), js(&serde_json::json!([later])), opts(&[("adapt", "none".into()), ("weight", 0.0.into()), ("lexiconWeight", 0.5.into())])).await.unwrap(),
    )
    .unwrap();
    assert_eq!((p["baseWer"].as_f64(), p["personalizedWer"].as_f64(), p["lexiconWer"].as_f64()), (Some(50.0), Some(0.0), Some(0.0)), "{p}");
    assert!(p["userWords"].as_array().unwrap().iter().any(|w| w == "quilter"), "{p}");
    let quilter = 0.5 * (lorb::lexicon::rarity("quilter") - lorb::lexicon::RARITY_FLOOR);
    let out: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(js(&later), JsValue::UNDEFINED).await.unwrap()).unwrap();
    let top = &out["hyps"][0];
    assert_eq!(top["text"], "quilter came", "{out}");
    assert!((top["boost"].as_f64().unwrap() - quilter).abs() < 1e-9 && (top["total"].as_f64().unwrap() - (-1.5 + quilter)).abs() < 1e-9, "{out}");
    let off: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(js(&later), opts(&[("lexiconWeight", 0.0.into())])).await.unwrap()).unwrap();
    assert_eq!(off["hyps"][0]["text"], "quilder came", "{off}");
    let e = r.rescore(js(&later), opts(&[("lexiconWeight", "high".into())])).await.err().unwrap();
    assert_eq!(kind_of(e), "input");
}

/// The WebGPU probe works before any model is loaded and describes the adapter.
#[wasm_bindgen_test]
async fn webgpu_info_describes_the_adapter() {
    let v: serde_json::Value = serde_wasm_bindgen::from_value(lorb::wasm::webgpu_info().await.unwrap()).unwrap();
    assert_eq!(v["available"], true, "{v}");
    let a = &v["adapter"];
    assert!(a["maxComputeInvocationsPerWorkgroup"].as_u64().unwrap() >= 256, "{v}");
    assert!(a["maxStorageBufferBindingSize"].as_u64().unwrap() >= 1 << 20, "{v}");
    assert!(a["f16"].is_boolean() && a["problem"].is_null(), "{v}");
}

/// `dtype`: "auto" takes f16 where the adapter has shader-f16 (SwiftShader has not), "f16"
/// scores within 1e-2 of transformers there and is a `gpu` error naming shader-f16 elsewhere,
/// and anything but f32, f16, fp32, fp16 or auto is an input error.
#[wasm_bindgen_test]
async fn dtype_in_the_browser() {
    let f = fixture!("bert");
    let info: serde_json::Value = serde_wasm_bindgen::from_value(lorb::wasm::webgpu_info().await.unwrap()).unwrap();
    let has_f16 = info["adapter"]["f16"] == true;
    let load = |dtype: JsValue| lorb::wasm::Rescorer::load(opts(&[("config", bytes(f.config)), ("weights", bytes(f.weights)), ("tokenizer", bytes(f.tokenizer)), ("head", bytes(f.head)), ("backend", "gpu".into()), ("dtype", dtype)]));
    let r = load("auto".into()).await.unwrap();
    let caps: serde_json::Value = serde_wasm_bindgen::from_value(r.capabilities().unwrap()).unwrap();
    assert_eq!(caps["dtype"], if has_f16 { "f16" } else { "f32" }, "{caps}");
    match load("fp16".into()).await {
        Ok(mut r) => {
            assert!(has_f16);
            let exp: serde_json::Value = serde_json::from_str(f.expected).unwrap();
            let s = &exp["sentences"];
            let nbest = serde_json::json!({"hyps": [{"text": s[0]["text"], "score": 0.0}]});
            let out: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(nbest.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap(), JsValue::UNDEFINED).await.unwrap()).unwrap();
            let d = (out["hyps"][0]["s2"].as_f64().unwrap() - s[0]["cls_score"].as_f64().unwrap()).abs();
            assert!(d <= 1e-2, "f16 CLS score off by {d}");
        }
        Err(e) => {
            assert!(!has_f16, "the adapter has shader-f16");
            let msg = e.dyn_ref::<js_sys::Error>().unwrap().message().as_string().unwrap();
            assert!(kind_of(e) == "gpu" && msg.contains("shader-f16"), "{msg}");
            web_sys::console::log_1(&format!("f16 skipped: {msg}").into());
        }
    }
    for bad in [JsValue::from("f8"), JsValue::from(16.0)] {
        let e = load(bad).await.err().unwrap();
        assert_eq!(kind_of(e), "input");
    }
}

use serde::Serialize;

fn training_lists(exp: &serde_json::Value) -> JsValue {
    let s = &exp["sentences"];
    let lists = serde_json::json!([
        {"ref": s[0]["text"], "hyps": [{"text": s[1]["text"], "score": -1.0}, {"text": s[0]["text"], "score": -1.4}, {"text": s[2]["text"], "score": -2.0}]},
        {"ref": s[2]["text"], "hyps": [{"text": s[3]["text"], "score": -0.5}, {"text": s[2]["text"], "score": -0.9}]},
    ]);
    lists.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap()
}

/// Training in the browser (WebGPU): steps with progress, then an exported PEFT adapter that
/// lorb reads back; a cancelled run rejects with kind `cancelled` and keeps its adapter.
#[wasm_bindgen_test]
async fn training_in_the_browser() {
    let f = fixture!("bert");
    let exp: serde_json::Value = serde_json::from_str(f.expected).unwrap();
    let load = || lorb::wasm::Rescorer::load(opts(&[("config", bytes(f.config)), ("weights", bytes(f.weights)), ("tokenizer", bytes(f.tokenizer)), ("backend", "gpu".into())]));
    let mut r = load().await.unwrap();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<serde_json::Value>::new()));
    let s2 = seen.clone();
    let cb = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |p: JsValue| s2.borrow_mut().push(serde_wasm_bindgen::from_value(p).unwrap()));
    let o = opts(&[("epochs", 3.0.into()), ("batch", 1.0.into()), ("lr", 0.01.into()), ("kappa", 0.5.into())]);
    let res: serde_json::Value = serde_wasm_bindgen::from_value(r.train(training_lists(&exp), o, cb.as_ref().clone(), JsValue::UNDEFINED).await.unwrap()).unwrap();
    assert_eq!(res["steps"], 6);
    let of = |t: &str| seen.borrow().iter().filter(|p| p["type"] == t).count();
    assert_eq!((of("step"), of("epoch")), (6, 3), "one progress report per step and per epoch: {:?}", seen.borrow());
    // Two lists are too few to hold any out: λ = 1/κ.
    assert_eq!((res["devLists"].as_u64(), res["weight"].as_f64()), (Some(0), Some(2.0)));
    assert!(res["losses"].as_array().unwrap().iter().all(|l| l.as_f64().unwrap().is_finite()));
    let exported = r.export_adapter().unwrap();
    let cfg = js_sys::Uint8Array::new(&js_sys::Reflect::get(&exported, &"config".into()).unwrap()).to_vec();
    let st = js_sys::Uint8Array::new(&js_sys::Reflect::get(&exported, &"weights".into()).unwrap()).to_vec();
    let config = lorb::ModelConfig::from_json(f.config).unwrap();
    let a = lorb::Adapter::from_bytes(&cfg, &st, &config).unwrap();
    assert_eq!(a.pairs.len(), 4);
    assert!(a.cls_head.is_some());
    // The trained adapter is merged: rescoring uses its head.
    let nb = serde_json::json!({"hyps": [{"text": "the quick brown fox", "score": -1.0}]});
    assert!(r.rescore(nb.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap(), JsValue::UNDEFINED).await.is_ok());

    // With dev lists, λ is tuned on them (a multiple of 1/κ on the grid) and the dev WER reported.
    let mut r = load().await.unwrap();
    let o = opts(&[("epochs", 2.0.into()), ("batch", 1.0.into()), ("lr", 0.01.into()), ("kappa", 0.5.into()), ("dev", training_lists(&exp))]);
    let res: serde_json::Value = serde_wasm_bindgen::from_value(r.train(training_lists(&exp), o, JsValue::UNDEFINED, JsValue::UNDEFINED).await.unwrap()).unwrap();
    assert_eq!(res["devLists"], 2);
    let (first, best) = (res["devFirstPassWer"].as_f64().unwrap(), res["devWer"].as_f64().unwrap());
    assert!(best <= first && first > 0.0, "dev WER {best} vs first pass {first}");
    let w = res["weight"].as_f64().unwrap();
    assert!(res["lambdaCurve"].as_array().unwrap().iter().any(|p| p[0].as_f64() == Some(w)), "λ {w} from the grid");
    let caps: serde_json::Value = serde_wasm_bindgen::from_value(r.capabilities().unwrap()).unwrap();
    assert_eq!(caps["weight"].as_f64(), Some(w), "rescore uses the tuned λ");

    // A time limit already spent: one step, then the usual dev evaluation.
    let mut r = load().await.unwrap();
    let o = opts(&[("epochs", 3.0.into()), ("batch", 1.0.into()), ("timeLimit", 1e-6.into()), ("dev", training_lists(&exp))]);
    let res: serde_json::Value = serde_wasm_bindgen::from_value(r.train(training_lists(&exp), o, JsValue::UNDEFINED, JsValue::UNDEFINED).await.unwrap()).unwrap();
    assert_eq!((res["steps"].as_u64(), res["timeLimitedSteps"].as_u64(), res["curve"].as_array().map(|c| c.len())), (Some(1), Some(1), Some(1)));

    // continueAdapter: training starts from the adapter in use (a personal adapter on top of
    // the global one): at a learning rate of 0 its pairs and head come back unchanged, where a
    // fresh start would come back with B = 0.
    let mut r = load().await.unwrap();
    let (cfg, st) = (include_bytes!("fixtures/bert/train_adapter/adapter_config.json"), include_bytes!("fixtures/bert/train_adapter/adapter_model.safetensors"));
    r.set_adapter(opts(&[("config", bytes(cfg)), ("weights", bytes(st))]), JsValue::UNDEFINED).await.unwrap();
    let o = opts(&[("epochs", 1.0.into()), ("batch", 1.0.into()), ("lr", 0.0.into()), ("continueAdapter", true.into())]);
    r.train(training_lists(&exp), o, JsValue::UNDEFINED, JsValue::UNDEFINED).await.unwrap();
    let exported = r.export_adapter().unwrap();
    let got = lorb::Adapter::from_bytes(&js_sys::Uint8Array::new(&js_sys::Reflect::get(&exported, &"config".into()).unwrap()).to_vec(), &js_sys::Uint8Array::new(&js_sys::Reflect::get(&exported, &"weights".into()).unwrap()).to_vec(), &config).unwrap();
    let want = lorb::Adapter::from_bytes(cfg, st, &config).unwrap();
    assert!(want.pairs.iter().any(|p| p.b.data.iter().any(|x| *x != 0.0)), "the start adapter has B ≠ 0");
    assert_eq!(got.pairs.len(), want.pairs.len());
    for (p, q) in got.pairs.iter().zip(&want.pairs) {
        assert!(p.a.data == q.a.data && p.b.data == q.b.data, "layer {} {:?}: the start pair came back changed", p.layer, p.target);
    }
    assert_eq!(got.cls_head.map(|h| h.weight), want.cls_head.map(|h| h.weight));

    let mut r = load().await.unwrap();
    let token = lorb::wasm::CancelToken::new();
    token.cancel();
    let e = r.train(training_lists(&exp), JsValue::UNDEFINED, JsValue::UNDEFINED, token.into()).await.err().unwrap();
    assert_eq!(kind_of(e), "cancelled");
    assert!(r.export_adapter().is_ok(), "a cancelled run keeps its adapter");
}

/// The bert fixture's adapter bytes with the first value of its first lora_B set to `x`.
fn adapter_with_b0(x: f32) -> (JsValue, JsValue) {
    let cfg = include_bytes!("fixtures/bert/adapter/adapter_config.json");
    let st = include_bytes!("fixtures/bert/adapter/adapter_model.safetensors");
    let t = safetensors::SafeTensors::deserialize(st).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<u8>)> = t.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let b = kept.iter_mut().find(|k| k.0.contains("lora_B")).unwrap();
    b.2[..4].copy_from_slice(&x.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        kept.iter().map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())).collect();
    (bytes(cfg), bytes(&safetensors::serialize(views, None).unwrap()))
}

/// The reliability guarantees through the JS API: an absurd config, a NaN adapter and a NaN λ
/// are typed exceptions, and a training run that diverges rejects with kind `training`,
/// leaving the adapter that was merged before in use.
#[wasm_bindgen_test]
async fn bad_configs_adapters_and_diverging_training_through_the_js_api() {
    let f = fixture!("bert");
    let mut cfg: serde_json::Value = serde_json::from_slice(f.config).unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(1_000_000_000_000_000_000u64);
    let e = lorb::wasm::Rescorer::load(opts(&[("config", bytes(&serde_json::to_vec(&cfg).unwrap())), ("weights", bytes(f.weights)), ("tokenizer", bytes(f.tokenizer)), ("backend", "cpu".into())])).await.err().unwrap();
    assert_eq!(kind_of(e), "config");
    let load = |adapter: (JsValue, JsValue)| {
        lorb::wasm::Rescorer::load(opts(&[
            ("config", bytes(f.config)),
            ("weights", bytes(f.weights)),
            ("tokenizer", bytes(f.tokenizer)),
            ("adapter", opts(&[("config", adapter.0), ("weights", adapter.1)])),
            ("backend", "cpu".into()),
        ]))
    };
    assert_eq!(kind_of(load(adapter_with_b0(f32::NAN)).await.err().unwrap()), "adapter");
    // β chosen with an adapter (`lexiconWeight`, its train_log.json's) is personalize's default;
    // a negative one is an input error.
    let with_beta = |beta: JsValue| {
        let a = adapter_with_b0(0.25);
        lorb::wasm::Rescorer::load(opts(&[
            ("config", bytes(f.config)),
            ("weights", bytes(f.weights)),
            ("tokenizer", bytes(f.tokenizer)),
            ("adapter", opts(&[("config", a.0), ("weights", a.1), ("lexiconWeight", beta)])),
            ("backend", "cpu".into()),
        ]))
    };
    assert_eq!(kind_of(with_beta((-1.0).into()).await.err().unwrap()), "input");
    let mut rb = with_beta(0.25.into()).await.unwrap();
    let caps: serde_json::Value = serde_wasm_bindgen::from_value(rb.capabilities().unwrap()).unwrap();
    assert_eq!(caps["lexiconWeight"].as_f64(), Some(0.25), "{caps}");
    let js = |v: serde_json::Value| v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap();
    let adapt = serde_json::json!([{"utt": "7-8-0000", "ref": "mister quilter spoke", "hyps": [{"text": "mister quilter spoke", "score": -1.0}]}]);
    let later = serde_json::json!([{"utt": "7-8-0001", "ref": "quilter came", "hyps": [{"text": "quilder came", "score": -1.0}, {"text": "quilter came", "score": -1.5}]}]);
    let p: serde_json::Value = serde_wasm_bindgen::from_value(rb.personalize(js(adapt), js(later), opts(&[("adapt", "none".into())])).await.unwrap()).unwrap();
    assert_eq!(p["lexiconWeight"].as_f64(), Some(0.25), "{p}");
    let mut r = load(adapter_with_b0(0.25)).await.unwrap();
    let nb = || serde_json::json!({"utt": "u", "hyps": [{"text": "the quick brown fox", "score": -1.0}, {"text": "a slow dog", "score": -2.0}]}).serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap();
    assert_eq!(kind_of(r.rescore(nb(), opts(&[("weight", f64::NAN.into())])).await.err().unwrap()), "input");
    let before: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(nb(), JsValue::UNDEFINED).await.unwrap()).unwrap();
    let exp: serde_json::Value = serde_json::from_str(f.expected).unwrap();
    let o = opts(&[("epochs", 1.0.into()), ("batch", 1.0.into()), ("lr", 1e38.into()), ("weightDecay", 1e6.into()), ("clip", 0.0.into())]);
    let e = r.train(training_lists(&exp), o, JsValue::UNDEFINED, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(kind_of(e), "training");
    let after: serde_json::Value = serde_wasm_bindgen::from_value(r.rescore(nb(), JsValue::UNDEFINED).await.unwrap()).unwrap();
    assert_eq!(before, after, "the adapter merged before training is still the one in use");
    let e = r.train(training_lists(&exp), opts(&[("epochs", 0.0.into())]), JsValue::UNDEFINED, JsValue::UNDEFINED).await.err().unwrap();
    assert_eq!(kind_of(e), "input");
}

//! MD's teacher: its PLL of every training and dev list, kept in a cache on disk.

use crate::common::progress;
use crate::train::TrainArgs;
use lorb::train::ListExample;
use lorb::{Error, Method, NBest, Result, Scorer};
use serde_json::json;
use std::path::{Path, PathBuf};

/// MD's teacher scores kept on disk: one JSON line per list, `{"utt", "key", "pll"}`, where
/// `key` hashes the hypothesis texts (so another depth or n-best file does not match).
struct TeacherCache {
    path: Option<PathBuf>,
    map: std::collections::HashMap<(String, u64), Vec<f64>>,
    hits: usize,
}

impl TeacherCache {
    fn key(texts: &[&str]) -> u64 {
        // FNV-1a over the texts, each ended by a 0 byte.
        texts.iter().flat_map(|t| t.bytes().chain([0u8])).fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    }

    fn open(path: Option<&Path>) -> Result<Self> {
        let mut map = std::collections::HashMap::new();
        if let Some(p) = path.filter(|p| p.exists()) {
            let io = |e| Error::Io { path: p.display().to_string(), source: e };
            for (i, line) in std::fs::read_to_string(p).map_err(io)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Input(format!("{}:{}: {e}", p.display(), i + 1)))?;
                let (Some(utt), Some(key), Some(pll)) = (v["utt"].as_str(), v["key"].as_str().and_then(|k| u64::from_str_radix(k, 16).ok()), v["pll"].as_array()) else {
                    return Err(Error::Input(format!("{}:{}: expected {{\"utt\", \"key\", \"pll\"}}", p.display(), i + 1)));
                };
                map.insert((utt.to_string(), key), pll.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect());
            }
        }
        Ok(TeacherCache { path: path.map(Path::to_path_buf), map, hits: 0 })
    }

    fn get(&mut self, utt: &str, texts: &[&str]) -> Option<Vec<f64>> {
        let v = self.map.get(&(utt.to_string(), Self::key(texts))).filter(|v| v.len() == texts.len()).cloned();
        self.hits += v.is_some() as usize;
        v
    }

    fn put(&mut self, utt: &str, texts: &[&str], pll: &[f64]) -> Result<()> {
        let Some(p) = &self.path else { return Ok(()) };
        let line = json!({"utt": utt, "key": format!("{:016x}", Self::key(texts)), "pll": pll});
        let io = |e| Error::Io { path: p.display().to_string(), source: e };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(io)?;
        std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).map_err(io)
    }
}

/// The teacher's PLL of each list's hypotheses (down to the example's depth) into its example:
/// from --teacher-cache when it has them, else scored by --teacher and added to the cache.
pub fn teacher_scores(a: &TrainArgs, scorer: &Scorer, lists: &[NBest], train_ex: &mut [ListExample], dev_lists: &[NBest], dev_ex: &mut [ListExample]) -> Result<()> {
    let dir = a.teacher.as_ref().ok_or_else(|| Error::Input("md needs --teacher MODEL_DIR (a model with an MLM head)".into()))?;
    let mut teacher = pollster::block_on(Scorer::load_dir_with(dir, a.m.backend, a.m.dtype, a.teacher_adapter.as_deref()))?;
    teacher.encoder.policy = scorer.encoder.policy;
    let mut cache = TeacherCache::open(a.teacher_cache.as_deref())?;
    let pb = progress(lists.len() + dev_lists.len(), "teacher PLL");
    for (nb, ex) in lists.iter().zip(train_ex.iter_mut()).chain(dev_lists.iter().zip(dev_ex.iter_mut())) {
        let texts: Vec<&str> = nb.hyps[..ex.s1.len()].iter().map(|h| h.text.as_str()).collect();
        ex.teacher = Some(match cache.get(&nb.utt, &texts) {
            Some(v) => v,
            None => {
                let v = pollster::block_on(teacher.score_list(&texts, Method::Pll))?;
                cache.put(&nb.utt, &texts, &v)?;
                v
            }
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    if cache.hits > 0 {
        eprintln!("lorb: teacher PLL of {} lists from the cache", cache.hits);
    }
    Ok(())
}

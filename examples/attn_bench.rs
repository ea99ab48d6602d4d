use lorb::cpu::ops::{attention, Heads, Packed, Queries};
fn main() {
    let len = 86; let seqs = 200; let hd = Heads { heads: 12, dh: 32 };
    let p = Packed::new(std::iter::repeat(len).take(seqs));
    let qkv: Vec<f32> = (0..p.tokens * 3 * 384).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (c, _) = attention(&qkv, &p, hd, Queries::All, false);
        let s = t.elapsed().as_secs_f64();
        let flops = (seqs * len * len * 32 * 4 * 12) as f64;
        println!("{:.1} ms, {:.1} GFLOP/s, {}", s * 1e3, flops / s / 1e9, c[5]);
    }
}

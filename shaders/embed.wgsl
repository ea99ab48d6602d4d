// Token embeddings: out[t, :] = word[id_t] + position[pos_t] + token_type[0].
// One invocation per output element; LayerNorm follows in layernorm.wgsl. A vocabulary too large
// for one binding is split into row shards: one dispatch per shard, each writing the tokens
// whose ids fall in [vocab_lo, vocab_hi). The word table's element type WT is f16 in the f16
// twin (embed_f16).

alias WT = f32;

// #uniform: `struct Params`, generated from the launcher's `Params` (src/gpu/ops/embed.rs).
// #include "grid.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> word: array<WT>;
@group(0) @binding(3) var<storage, read> pos: array<f32>;
@group(0) @binding(4) var<storage, read> typ: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = element_index(wid, nwg, lid, 256u);
    if (idx >= p.n) {
        return;
    }
    let tok = idx / p.hidden;
    let d = idx % p.hidden;
    let t = tok % p.seq;
    let id = ids[p.tok_offset + tok];
    if (id < p.vocab_lo || id >= p.vocab_hi) {
        return;
    }
    out[idx] = f32(word[(id - p.vocab_lo) * p.hidden + d]) + pos[(t + p.pos_offset) * p.hidden + d] + typ[d];
}

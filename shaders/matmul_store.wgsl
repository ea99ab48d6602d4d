// The matmul epilogue (matmul.wgsl, matmul_vec4.wgsl): C[r, col] = act(α·acc + bias[col]), plus
// R [m, n] (has_res 1) or C's previous value (has_res 2), where (r, col) lies inside [m, n].
fn store(r: u32, col: u32, acc: f32) {
    if (r < p.m && col < p.n) {
        var v = p.alpha * acc + bias[col];
        if (p.act == 1u) {
            v = gelu(v);
        }
        let idx = p.c_off + r * p.ldc + col;
        if (p.has_res == 1u) {
            v = v + res[r * p.n + col];
        } else if (p.has_res == 2u) {
            v = v + c[idx];
        }
        c[idx] = v;
    }
}

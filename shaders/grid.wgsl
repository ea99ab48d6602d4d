// Flat indices of a dispatch that launchers spread over x and y (a grid dimension holds at most
// 65,535 workgroups): the workgroup's index, and an invocation's in workgroups of `size`.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
    return group_index(wid, nwg) * size + lid;
}

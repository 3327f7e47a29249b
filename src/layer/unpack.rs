pub fn unpack_layer() {}

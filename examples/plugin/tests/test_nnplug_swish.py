import nnplug.testing
test_swish = nnplug.testing.layer_test("swish")
test_channel_scale = nnplug.testing.layer_test("channel_scale")

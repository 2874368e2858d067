"""A small separable-convolution CNN for experiments/spaces/sepnet.yaml (the builder of that space)."""

import keras


def sepnet(data, filters=16, mid=48, hidden=96):
    side = int(round(data.x_train.shape[1] ** 0.5))
    inp = keras.Input(data.x_train.shape[1:])
    h = keras.layers.Reshape((side, side, 1))(inp)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="stem")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = keras.layers.Conv2D(mid, 1, activation="relu", name="pw")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(hidden, activation="relu", name="fc")(h)
    return keras.Model(inp, keras.layers.Dense(data.num_classes, name="out")(h))

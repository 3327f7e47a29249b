'use strict';
// A vendored dependency, so `yarn install` has something to install without a registry.
exports.greet = (name) => `Hello, ${name}, from a yarn-installed module!`;

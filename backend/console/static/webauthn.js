/* Vigil console: security keys and passkeys (WebAuthn).

   The console's policy allows no inline script, so a page says what to do in data- attributes
   and this file does it. A button `data-webauthn="get"` (sign in, step up) or `"create"` (add a
   key) sits in a form with a hidden `credential` field. On a click the options come from the
   button: `data-options` holds them as JSON, or `data-options-url` is posted to (with the
   form's CSRF token) for them. The browser asks the key; what it answers is encoded as
   PublicKeyCredential JSON (binary values base64url, as the server's py_webauthn reads them),
   put in `credential`, and the form is sent. */
(function () {
  "use strict";

  var UNSUPPORTED = "This browser cannot use a security key here: use a code instead.";
  var CANCELLED = "The security key did not answer (cancelled, timed out, or not one of yours). " +
                  "Try again, or use a code.";
  var UNAVAILABLE = "The console could not ask for a security key. Reload the page and try again.";

  function toBytes(base64url) {
    var base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) { bytes[i] = binary.charCodeAt(i); }
    return bytes;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(descriptors) {
    return (descriptors || []).map(function (descriptor) {
      return Object.assign({}, descriptor, {id: toBytes(descriptor.id)});
    });
  }

  function publicKey(mode, options) {
    var decoded = Object.assign({}, options, {challenge: toBytes(options.challenge)});
    if (mode === "create") {
      decoded.user = Object.assign({}, options.user, {id: toBytes(options.user.id)});
      decoded.excludeCredentials = withIds(options.excludeCredentials);
    } else {
      decoded.allowCredentials = withIds(options.allowCredentials);
    }
    return decoded;
  }

  function encoded(credential) {
    var answer = credential.response;
    var response = {clientDataJSON: toBase64url(answer.clientDataJSON)};
    if (answer.attestationObject) {
      response.attestationObject = toBase64url(answer.attestationObject);
      response.transports = answer.getTransports ? answer.getTransports() : [];
    } else {
      response.authenticatorData = toBase64url(answer.authenticatorData);
      response.signature = toBase64url(answer.signature);
      if (answer.userHandle) { response.userHandle = toBase64url(answer.userHandle); }
    }
    return {id: credential.id, rawId: toBase64url(credential.rawId), type: credential.type,
            response: response, authenticatorAttachment: credential.authenticatorAttachment,
            clientExtensionResults: credential.getClientExtensionResults()};
  }

  function options(button, form) {
    if (button.dataset.options) {
      return Promise.resolve(JSON.parse(button.dataset.options));
    }
    return fetch(button.dataset.optionsUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRFToken": form.elements.csrf_token.value}
    }).then(function (answer) {
      if (!answer.ok) { throw new Error(UNAVAILABLE); }
      return answer.json();
    }).catch(function () { throw new Error(UNAVAILABLE); });
  }

  function ask(mode, options) {
    var request = {publicKey: publicKey(mode, options.public_key)};
    var asked = mode === "create" ? navigator.credentials.create(request)
                                  : navigator.credentials.get(request);
    return asked.catch(function () { throw new Error(CANCELLED); });
  }

  function say(form, message) {
    var error = form.querySelector("[data-webauthn-error]");
    error.textContent = message;
    error.hidden = false;
  }

  function use(button) {
    var form = button.form;
    button.disabled = true;
    options(button, form)
      .then(function (got) { return ask(button.dataset.webauthn, got); })
      .then(function (credential) {
        form.elements.credential.value = JSON.stringify(encoded(credential));
        form.submit();
      })
      .catch(function (error) {
        button.disabled = false;
        say(form, error.message);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-webauthn]").forEach(function (button) {
      if (!window.PublicKeyCredential || !navigator.credentials) {
        button.disabled = true;
        say(button.form, UNSUPPORTED);
        return;
      }
      button.addEventListener("click", function () { use(button); });
    });
  });
}());

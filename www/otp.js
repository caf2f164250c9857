// Counts the resend button's server-rendered seconds down, then enables
// it. WebOTP: when the browser can read the code from the SMS (Android
// Chrome, a message ending "@domain #code"), fill it in and submit.
(function () {
  'use strict';
  var w = document.getElementById('wait');
  var b = document.getElementById('resend');
  var n = w ? parseInt(w.textContent.replace(/\D/g, ''), 10) : 0;
  if (n > 0) {
    var t = setInterval(function () {
      if (--n > 0) {
        w.textContent = w.textContent.replace(/\d+/, n);
        return;
      }
      clearInterval(t);
      w.textContent = '';
      b.disabled = false;
    }, 1000);
  }
  if (!('OTPCredential' in window) || !window.AbortController) return;
  var input = document.getElementById('token');
  if (!input || !input.form) return;
  var ac = new AbortController();
  input.form.addEventListener('submit', function () { ac.abort(); });
  navigator.credentials.get({ otp: { transport: ['sms'] }, signal: ac.signal })
    .then(function (otp) {
      if (otp && otp.code) {
        input.value = otp.code;
        input.form.submit();
      }
    })
    .catch(function () {});
})();

// WebOTP: when the browser can read the code from the SMS (Android Chrome
// with a message ending "@domain #code"), fill it in and submit. Elsewhere
// this does nothing and the form works as before.
(function () {
  'use strict';
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

// Switchyard Blog web client.
//
// Static, dependency-free, and CSP-friendly: no inline code, no inline styles,
// and user content only ever reaches the page through textContent.
'use strict';

(function () {
  const POLL_INTERVAL_MS = 2000;
  const MAX_STREAM_ERRORS = 3;
  const NETWORK_ERROR = 'Could not reach the server';

  const STATUS_TEXT = {
    pending: 'This comment is awaiting moderation',
    rejected: 'This comment has been rejected',
  };

  // postId -> { article, title, list, empty }
  const cards = new Map();
  let cardCounter = 0;
  let commentInputCounter = 0;

  // Freshness bookkeeping so an old GET /posts answer never overwrites newer data.
  let snapshotCount = 0;
  let fetchSeq = 0;
  let appliedFetchSeq = 0;

  let stream = null;
  let streamErrors = 0;
  let pollTimer = null;

  const els = {};

  // ---------------------------------------------------------------- helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Top-level keys of a JSON object text, in document order. JSON.parse
  // moves integer-like keys (e.g. the id "12345678") to the front, which
  // would break creation order, so we read the order from the text itself.
  function topLevelKeys(text) {
    const keys = [];
    let depth = 0;
    let expectKey = false;
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (ch === '"') {
        const start = i;
        for (i++; i < text.length && text[i] !== '"'; i++) {
          if (text[i] === '\\') i++;
        }
        if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(start, i + 1)));
        expectKey = false;
      } else if (ch === '{' || ch === '[') {
        depth++;
        expectKey = depth === 1 && ch === '{';
      } else if (ch === '}' || ch === ']') {
        depth--;
      } else if (ch === ',') {
        expectKey = depth === 1;
      }
    }
    return keys;
  }

  // Parses a posts document ({ "<id>": {id, title, comments} }) into an
  // ordered array of posts. Returns null for anything unexpected.
  function parsePosts(text) {
    let data;
    try {
      data = JSON.parse(text);
    } catch (_) {
      return null;
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) return null;
    let keys;
    try {
      keys = topLevelKeys(text);
    } catch (_) {
      keys = [];
    }
    const ordered = keys.filter((k) => Object.prototype.hasOwnProperty.call(data, k));
    const seen = new Set(ordered);
    for (const k of Object.keys(data)) if (!seen.has(k)) ordered.push(k);
    return [...new Set(ordered)]
      .map((key) => normalizePost(key, data[key]))
      .filter(Boolean);
  }

  function normalizePost(key, post) {
    if (!post || typeof post !== 'object') return null;
    const comments = Array.isArray(post.comments) ? post.comments : [];
    return {
      id: String(post.id !== undefined ? post.id : key),
      title: String(post.title !== undefined ? post.title : ''),
      comments: comments.filter((c) => c && typeof c === 'object'),
    };
  }

  // --------------------------------------------------------------- rendering

  function renderPosts(posts) {
    const container = els.posts;
    const wanted = new Set(posts.map((p) => p.id));

    for (const [id, card] of cards) {
      if (!wanted.has(id)) {
        card.article.remove();
        cards.delete(id);
      }
    }

    posts.forEach((post, index) => {
      let card = cards.get(post.id);
      if (!card) {
        card = createCard(post.id);
        cards.set(post.id, card);
      }
      updateCard(card, post);
      // Move a card only when it is out of place: moving a node that holds
      // the focused input would blur it.
      const current = container.children[index];
      if (current !== card.article) container.insertBefore(card.article, current || null);
    });

    els.empty.hidden = posts.length > 0;
  }

  function createCard(postId) {
    const article = el('article', 'post-card');
    article.dataset.postId = postId;

    const title = el('h3', 'post-title');
    title.id = 'post-heading-' + ++cardCounter;
    article.setAttribute('aria-labelledby', title.id);
    const list = el('ul', 'comments');
    list.setAttribute('aria-label', 'Comments');
    const empty = el('p', 'comments-empty', 'No comments yet.');

    article.append(title, list, empty, createCommentForm(postId));
    return { article, title, list, empty };
  }

  function createCommentForm(postId) {
    const n = ++commentInputCounter;
    const inputId = 'comment-input-' + n;
    const errorsId = 'comment-errors-' + n;

    const form = el('form', 'comment-form');
    const field = el('div', 'field');
    const label = el('label', null, 'New Comment');
    label.htmlFor = inputId;

    const row = el('div', 'field__row');
    const input = el('input', 'comment-input');
    input.id = inputId;
    input.name = 'content';
    input.type = 'text';
    input.maxLength = 2000;
    input.required = true;
    input.autocomplete = 'off';
    input.dataset.field = 'content';
    input.setAttribute('aria-describedby', errorsId);

    const button = el('button', 'button', 'Submit');
    button.type = 'submit';

    const errors = el('div', 'form-errors');
    errors.id = errorsId;
    errors.setAttribute('role', 'alert');
    errors.hidden = true;

    row.append(input, button);
    field.append(label, row);
    form.append(field, errors);

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submitForm(form, '/posts/' + encodeURIComponent(postId) + '/comments', {
        content: input.value,
      });
    });
    return form;
  }

  function updateCard(card, post) {
    if (card.title.textContent !== post.title) card.title.textContent = post.title;

    const items = post.comments.map(renderComment);
    card.list.replaceChildren(...items);
    card.list.hidden = items.length === 0;
    card.empty.hidden = items.length > 0;
  }

  function renderComment(comment) {
    const status = typeof comment.status === 'string' ? comment.status : 'pending';
    const known = status === 'approved' || status === 'rejected' ? status : 'pending';
    const li = el('li', 'comment comment--' + known);
    li.dataset.status = status;
    li.dataset.commentId = String(comment.id !== undefined ? comment.id : '');
    li.textContent = known === 'approved' ? String(comment.content ?? '') : STATUS_TEXT[known];
    return li;
  }

  // ------------------------------------------------------------------ errors

  function showErrors(form, errors) {
    const box = form.querySelector('.form-errors');
    const list = el('ul');
    for (const err of errors) list.append(el('li', null, err.message));
    box.replaceChildren(list);
    box.hidden = false;

    const fields = new Set(errors.map((e) => e.field).filter(Boolean));
    for (const input of form.querySelectorAll('input[data-field]')) {
      if (fields.has(input.dataset.field)) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  }

  function clearErrors(form) {
    const box = form.querySelector('.form-errors');
    box.replaceChildren();
    box.hidden = true;
    for (const input of form.querySelectorAll('input[aria-invalid]')) {
      input.removeAttribute('aria-invalid');
    }
  }

  // Turns a failed response into [{message, field?}].
  async function errorsFromResponse(response) {
    const fallback = [{ message: 'Request failed (' + response.status + ')' }];
    let body;
    try {
      body = await response.json();
    } catch (_) {
      return fallback;
    }
    if (!body || !Array.isArray(body.errors) || body.errors.length === 0) return fallback;
    return body.errors.map((e) => ({
      message: String(e && e.message !== undefined ? e.message : 'Request failed'),
      field: e && typeof e.field === 'string' ? e.field : undefined,
    }));
  }

  // ------------------------------------------------------------------- forms

  async function submitForm(form, path, payload) {
    const button = form.querySelector('button[type="submit"]');
    if (button.disabled) return;
    button.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      let response;
      try {
        response = await fetch(path, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify(payload),
        });
      } catch (_) {
        showErrors(form, [{ message: NETWORK_ERROR }]);
        return;
      }
      if (!response.ok) {
        showErrors(form, await errorsFromResponse(response));
        return;
      }
      clearErrors(form);
      form.reset();
      refresh();
    } finally {
      button.disabled = false;
      form.removeAttribute('aria-busy');
    }
  }

  function onCreatePost(event) {
    event.preventDefault();
    submitForm(els.createForm, '/posts/create', { title: els.titleInput.value });
  }

  // ------------------------------------------------------------ data loading

  async function refresh() {
    const seq = ++fetchSeq;
    const snapshotsBefore = snapshotCount;
    let text;
    try {
      const response = await fetch('/posts', {
        headers: { accept: 'application/json' },
        cache: 'no-store',
      });
      if (!response.ok) throw new Error('HTTP ' + response.status);
      text = await response.text();
    } catch (_) {
      return false;
    }
    const posts = parsePosts(text);
    if (!posts) return false;
    // A live snapshot that arrived meanwhile is at least as fresh; so is a
    // later fetch that has already been applied.
    if (snapshotCount !== snapshotsBefore || seq < appliedFetchSeq) return true;
    appliedFetchSeq = seq;
    renderPosts(posts);
    return true;
  }

  function setConnection(state) {
    const text = state === 'live' ? 'Live' : 'Reconnecting…';
    const node = els.connection;
    node.className = 'connection connection--' + state;
    if (node.textContent !== text) node.textContent = text;
  }

  function startStream() {
    if (typeof window.EventSource !== 'function') {
      startPolling();
      return;
    }
    stream = new EventSource('/posts/stream');
    stream.addEventListener('open', () => {
      streamErrors = 0;
      setConnection('live');
    });
    stream.addEventListener('snapshot', (event) => {
      const posts = parsePosts(event.data);
      if (!posts) return;
      streamErrors = 0;
      snapshotCount++;
      renderPosts(posts);
      setConnection('live');
    });
    stream.addEventListener('error', () => {
      streamErrors++;
      setConnection('reconnecting');
      if (streamErrors >= MAX_STREAM_ERRORS || stream.readyState === EventSource.CLOSED) {
        stream.close();
        stream = null;
        startPolling();
      }
    });
  }

  function startPolling() {
    if (pollTimer !== null) return;
    const tick = async () => {
      const ok = await refresh();
      setConnection(ok ? 'live' : 'reconnecting');
      pollTimer = window.setTimeout(tick, POLL_INTERVAL_MS);
    };
    pollTimer = window.setTimeout(tick, 0);
  }

  // -------------------------------------------------------------------- init

  function init() {
    els.posts = document.getElementById('posts');
    els.empty = document.getElementById('posts-empty');
    els.connection = document.getElementById('connection');
    els.createForm = document.getElementById('create-post');
    els.titleInput = document.getElementById('post-title');

    els.createForm.addEventListener('submit', onCreatePost);
    refresh().then((ok) => {
      if (!ok && stream === null && pollTimer === null) setConnection('reconnecting');
    });
    startStream();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
